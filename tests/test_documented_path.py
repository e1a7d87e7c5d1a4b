"""The documented path works (issue 19 item 7): the --help examples and the README's commands,
chained as a newcomer chains them, end in a chip result, and every "next:" command printed runs.

The examples are run as written, on a tiny generated N-MNIST folder in place of
../shared/data/nmnist-small and with a few options appended that shrink them (argparse keeps an
option's last value), each in its own process, in a scratch folder holding ``runs/``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import random_events

from asa_deploy.cli import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
SHARED_NMNIST = "../shared/data/nmnist-small"
# The --help chain in the order a newcomer runs it, and the examples left out of it.
CHAIN = ["train", "evaluate", "analyze", "fold", "compile", "simulate", "export", "camera",
         "report", "import"]
NOT_CHAINED = {"deploy": "needs a board", "compare": "needs two monitor files of one config",
               "quickstart": "tests/test_train.py runs it", "models": "no run directory"}
SHRINK = {
    "train": ["--epochs", "1", "--n-val", "10", "--batch-size", "5", "--param", "c1=4",
              "--param", "c2=4", "--param", "c3=4", "--T", "4", "--no-progress"],
    "evaluate": ["--windows", "2"],
    "analyze": ["--windows", "2"],
    "fold": ["--finetune-epochs", "1", "--eval-windows", "1", "--no-progress"],
    "simulate": ["--windows", "1"],
}
STEP_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def nmnist_tiny(tmp_path_factory) -> Path:
    """30 N-MNIST-layout recordings (3 per digit) named as in nmnist-small, so paths inside it
    (camera's --replay file) exist here too."""
    from conftest import write_bin40

    root = tmp_path_factory.mktemp("nmnist-tiny")
    index = 1
    for digit in range(10):
        folder = root / "Train" / str(digit)
        folder.mkdir(parents=True)
        for k in range(3):
            ev = random_events(400, seed=10 * digit + k)
            ev["x"] = (ev["x"] + 3 * digit) % 34  # a little class structure
            write_bin40(folder / f"{index:05d}.bin", ev["x"], ev["y"], ev["t"], ev["p"])
            index += 1
    (root / "Train" / "0" / "00002.bin").write_bytes((root / "Train" / "0" / "00001.bin").read_bytes())
    return root


def asa_deploy(argv: list[str], cwd: Path) -> str:
    """Run one ``asa-deploy`` command in its own process; its output, or a failure showing it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "XDG_CACHE_HOME": str(cwd / "cache")}  # the default decoded-event cache, kept here
    done = subprocess.run([sys.executable, "-m", "asa_deploy.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    if done.returncode != 0:
        pytest.fail(f"asa-deploy {shlex.join(argv)} exited {done.returncode}:\n{done.stdout}\n"
                    f"{done.stderr}")
    return done.stdout + done.stderr


def as_run(command: str, data: Path) -> list[str]:
    """A documented ``asa-deploy ...`` line as argv, on the tiny data instead of the shared."""
    words = shlex.split(command.split("#")[0].replace(SHARED_NMNIST, str(data)))
    assert words[0] == "asa-deploy", command
    return words[1:]


def next_commands(output: str) -> list[str]:
    """Every command a printout tells the user to run next."""
    return re.findall(r"next: (asa-deploy [^\n]*)", output)


def test_every_example_is_chained_or_said_why_not():
    assert sorted(EXAMPLES) == sorted([*CHAIN, *NOT_CHAINED])


def test_the_help_examples_chained_end_on_the_chip(tmp_path, nmnist_tiny):
    run = tmp_path / "runs" / "nmnist-asa2"
    printed = {}
    for name in CHAIN:
        argv = as_run(EXAMPLES[name], nmnist_tiny) + SHRINK.get(name, [])
        assert argv[0] == name
        printed[name] = asa_deploy(argv, tmp_path)
    sim = json.loads((run / "sim.json").read_text())["exact"]
    assert sim["n_windows"] > 0 and sim["accuracy_window"] is not None and sim["chip"] == "speck2f"
    assert (run / "report.html").is_file() and (run / "camera.json").is_file()
    assert (tmp_path / "runs" / "imported" / "imported.pt").is_file()

    followed = [command for output in printed.values() for command in next_commands(output)]
    assert followed, "import prints its next: command"
    for command in followed:
        asa_deploy(as_run(command, nmnist_tiny), tmp_path)
    assert (tmp_path / "runs" / "imported" / "chip_config.json").is_file()

    # an imported run is told where it can go, and what it says runs
    imported = str(tmp_path / "runs" / "imported")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "asa_deploy.cli", "fold", imported], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert done.returncode == 2 and "holds an imported model (imported.pt)" in done.stderr
    assert "train first" not in done.stderr
    hinted = re.findall(r"`(asa-deploy [^`]*)`", done.stderr)
    assert [h.split()[1] for h in hinted] == ["compile", "simulate"]
    for command in hinted:
        asa_deploy(as_run(command, nmnist_tiny) + ["--bias", "drop"] * ("compile" in command)
                   + ["--windows", "1"] * ("simulate" in command), tmp_path)


def _readme_chains() -> list[list[str]]:
    """The README's ``bash`` blocks of asa-deploy commands, one chain per block."""
    text = (ROOT / "README.md").read_text()
    chains = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines = [line.strip() for line in block.replace("\\\n", " ").splitlines()]
        commands = [line for line in lines if line.startswith("asa-deploy ")]
        if commands:
            chains.append(commands)
    return chains


def test_the_readme_commands_chained_end_on_the_chip(tmp_path, nmnist_tiny):
    chains = _readme_chains()
    assert chains, "the README shows asa-deploy commands in bash blocks"
    for chain in chains:
        for command in chain:
            argv = as_run(command, nmnist_tiny)
            asa_deploy(argv + SHRINK.get(argv[0], []), tmp_path)
        assert chain[-1].split()[1] in ("simulate", "report", "camera"), chain[-1]
    sims = list((tmp_path / "runs").rglob("sim.json"))
    assert sims and all(json.loads(p.read_text()) for p in sims)


def test_the_readme_names_every_network_spec():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Networks"):]
    section = section[:section.index("\n## ", 1)]
    specs = sorted(p.stem for p in (ROOT / "models").glob("*.yaml"))
    assert specs and [s for s in specs if f"`{s}`" not in section] == []


# A markdown file named by its path in the repository, and the bare names of the notes the code
# once cited outside it (now under docs/).
CITED_PATH = re.compile(r"(?<![\w/.-])((?:[\w-]+/)+[\w.-]+\.md)\b")
BARE_NOTE = re.compile(r"(?<![\w/.-])((?:DESIGN|design|speck-hardware|asa-method|ecosystem|samna-usage)"
                       r"\.md)\b")


def test_every_cited_document_is_in_the_repository():
    citing = [ROOT / "README.md", *sorted((ROOT / "asa_deploy").rglob("*.py"))]
    missing, bare = [], []
    for path in citing:
        text = path.read_text()
        missing += [f"{path.relative_to(ROOT)}: {name}" for name in CITED_PATH.findall(text)
                    if not (ROOT / name).is_file()]
        bare += [f"{path.relative_to(ROOT)}: {name}" for name in BARE_NOTE.findall(text)]
    for doc in sorted((ROOT / "docs").glob("*.md")):  # links between the documents
        missing += [f"{doc.relative_to(ROOT)}: {link}"
                    for link in re.findall(r"\]\(([\w./-]+\.md)\)", doc.read_text())
                    if not (doc.parent / link).is_file()]
    assert missing == [] and bare == []
    assert {"design.md", "speck-hardware.md", "asa-method.md"} <= {
        p.name for p in (ROOT / "docs").glob("*.md")}


def test_import_of_a_network_with_biases_prints_a_next_command_that_runs(tmp_path, capsys):
    import sinabs.layers as sl
    import torch
    from torch import nn

    from asa_deploy.cli import main

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, 2), sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0),
                        nn.Flatten(), nn.Linear(4 * 16 * 16, 3),
                        sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0))
    torch.save(net, tmp_path / "net.pt")
    run = tmp_path / "run"
    assert main(["import", str(tmp_path / "net.pt"), "--out", str(run), "--input-shape",
                 "2,34,34"]) == 0
    out = capsys.readouterr().out
    assert "note: its layers have biases" in out
    [command] = next_commands(out)
    assert command == f"asa-deploy compile {run} --chip speck2f --bias drop"
    assert main(shlex.split(command)[1:]) == 0
    assert (run / "chip_config.json").is_file()


@pytest.mark.parametrize(("command", "stage", "said"), [
    ("train", "asa_deploy.train.train", "rerun the same command to resume from the last finished "
                                        "epoch (checkpoint.pt)"),
    ("fold", "asa_deploy.pipeline.fold_run", "rerun to start again (fold starts from scratch; "
                                             "only train resumes)"),
    ("simulate", "asa_deploy.chip.simulate.simulate_run", "rerun to start again (simulate starts "
                                                          "from scratch; only train resumes)"),
])
def test_ctrl_c_says_what_a_rerun_does(tmp_path, monkeypatch, capsys, command, stage, said):
    from asa_deploy.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, interrupted)
    argv = [command, "--out", str(tmp_path / "r")] if command == "train" else [command, str(tmp_path)]
    assert main(argv) == 130
    assert capsys.readouterr().err.splitlines()[-1] == f"interrupted; {said}"


def test_quickstart_refuses_a_model_that_fits_no_core_before_training(tmp_path, nmnist_tiny):
    out = tmp_path / "qs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "asa_deploy.cli", "quickstart", "--model", "nmnist-net", "--data",
         f"nmnist:{nmnist_tiny}", "--no-cache", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert done.returncode == 2, done.stderr
    assert ("error: --model nmnist-net does not fit speck2f (checked before training): layer "
            "block3.fc fits no core") in done.stderr
    assert "== training" not in done.stdout and not out.exists()
