"""asa-deploy import: NIR graphs written by sinabs, snnTorch, Norse and Rockpool's own exporters and
torch.save'd Sequentials become run directories every later stage accepts; bad graphs and files
are refused naming the node or the file. Also ``simulate --whole-recordings``."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings

import h5py
import nir
import numpy as np
import pytest
import sinabs.activation as sa
import sinabs.layers as sl
import torch
from torch import nn

from asa_deploy import provenance
from asa_deploy.chip.simulate import simulate_run, whole_recording_windows
from asa_deploy.cli import main
from asa_deploy.errors import ArtifactError, AsaDeployError, CompileError, DataSpecError
from asa_deploy.export import lowered_to_nir
from asa_deploy.export.importer import (
    IMPORTED,
    complete_shapes,
    import_model,
    is_imported,
    load_imported,
    nir_to_network,
)
from asa_deploy.pipeline import compile_run

T = 6


def quiet_infer(graph: nir.NIRGraph) -> nir.NIRGraph:
    with contextlib.redirect_stdout(io.StringIO()):
        graph.infer_types()
    return graph


def iaf(**kw):
    return sl.IAFSqueeze(batch_size=1, min_v_mem=-1.0, spike_fn=sa.MultiSpike, **kw)


def tutorial_net(seed: int = 0) -> nn.Sequential:
    """The N-MNIST CNN of the NIR paper / sinabs's NIR-to-Speck tutorial (2x34x34 -> 10)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 16, 5, 2, 1, bias=False), iaf(),
        nn.Conv2d(16, 16, 3, 1, 1, bias=False), iaf(), sl.SumPool2d(2),
        nn.Conv2d(16, 8, 3, 1, 1, bias=False), iaf(), sl.SumPool2d(2),
        nn.Flatten(), nn.Linear(128, 256, bias=False), iaf(),
        nn.Linear(256, 10, bias=False), iaf())
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.data *= 3.0  # enough activity that every layer spikes
    return net


def sinabs_graph(net: nn.Module, shape) -> nir.NIRGraph:
    import sinabs

    return quiet_infer(sinabs.to_nir(net, torch.rand(1, *shape)))


def spikes_in(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (T, *shape), generator=g).float()


def run(net, x):
    for m in net.modules():
        if isinstance(m, sl.StatefulLayer):
            m.reset_states()
    with torch.no_grad():
        return net(x)


# ---- sinabs ---------------------------------------------------------------------------------------

def test_sinabs_graph_imports_to_the_same_network(tmp_path):
    net = tutorial_net()
    path = tmp_path / "sinabs.nir"
    nir.write(path, sinabs_graph(net, (2, 34, 34)))
    record = import_model(path, tmp_path / "run", floor="threshold")  # trained with min_v_mem -1
    imported, saved, shape, sensor = load_imported(tmp_path / "run")
    assert shape == (2, 34, 34) and sensor.shape == (2, 34, 34)
    assert record["num_classes"] == 10 and saved["import"]["format"] == "nir"
    assert [type(m).__name__ for m in imported] == [
        "Conv2d", "IAFSqueeze", "Conv2d", "IAFSqueeze", "SumPool2d", "Conv2d", "IAFSqueeze",
        "SumPool2d", "Flatten", "Linear", "IAFSqueeze", "Linear", "IAFSqueeze"]
    x = spikes_in((2, 34, 34))
    expected = run(net, x)
    assert expected.sum() > 0
    assert torch.equal(run(imported, x), expected)
    assert saved["import"]["sha256"] == provenance.content_hash(path)
    assert is_imported(tmp_path / "run")


def test_round_trip_into_sinabs_importer(tmp_path):
    """sinabs graph -> our import -> our NIR export -> sinabs.from_nir: the original spikes."""
    import sinabs

    from asa_deploy.chip.lower import lower

    net = tutorial_net(seed=3)
    network, info = nir_to_network(sinabs_graph(net, (2, 34, 34)), floor="threshold")
    graph = lowered_to_nir(lower(network, tuple(info["input_shape"])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = sinabs.from_nir(graph, batch_size=1)  # min_v_mem = -v_threshold, as ours
    x = spikes_in((2, 34, 34), seed=4)
    with torch.no_grad():
        out, _ = theirs(x)
    assert torch.equal(out.reshape(T, -1), run(net, x))


def test_round_trip_into_norse_importer(tmp_path):
    pytest.importorskip("norse.torch.utils.import_nir",
                        reason="norse is not in the test extra (its torchvision dependency does "
                               "not import beside the CPU torch); pip install --no-deps norse")
    from norse.torch.utils.import_nir import from_nir

    from asa_deploy.chip.lower import lower

    network, info = nir_to_network(sinabs_graph(tutorial_net(), (2, 34, 34)))
    graph = lowered_to_nir(lower(network, tuple(info["input_shape"])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = from_nir(graph)
    state, x = None, spikes_in((2, 34, 34))[:, None]
    with torch.no_grad():
        for t in range(T):
            out, state = module(x[t], state)
    assert out.shape == (1, 10, 1, 1)  # our export writes Linear as a full-kernel Conv2d


def test_compile_simulate_export_report_an_imported_run(tmp_path):
    """The CLI path on the synthetic sensor (128x128, pooled by 4 onto the network's 32x32)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, 2, bias=False), iaf(), sl.SumPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 7 * 7, 6, bias=False), iaf())
    path = tmp_path / "tiny.nir"
    nir.write(path, sinabs_graph(net, (2, 32, 32)))
    out = tmp_path / "run"
    assert main(["import", str(path), "--out", str(out), "--data", "synthetic:gesture-tiny"]) == 0
    record = load_imported(out)[1]
    assert record["data"]["frame_spec"]["downsample"] == 4
    assert record["data"]["class_names"] == load_imported(out)[1]["data"]["class_names"]
    assert main(["compile", str(out), "--chip", "speck2f"]) == 0
    assert provenance.problems(out, "chip_config.json") == []
    meta = json.loads((out / "chip_config.json").read_text())["meta"]
    assert meta["source"].endswith(IMPORTED) and meta["import"]["format"] == "nir"
    assert main(["simulate", str(out), "--engine", "exact", "--whole-recordings",
                 "--max-recordings", "4"]) == 0
    sim = json.loads((out / "sim.json").read_text())["exact"]
    assert sim["n_windows"] == 4 and sim["windows_per_recording"] == 1
    assert sim["whole_recordings"] is True
    assert sim["accuracy_recording"] is not None and sim["accuracy_window"] is None
    assert "accuracy" not in sim and "recording_accuracy" not in sim
    assert main(["export", str(out)]) == 0
    assert (out / "model.nir").is_file() and (out / "model_quantized.nir").is_file()
    assert main(["report", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    (label, entry), = report["runs"].items()
    assert label == "imported" and entry["imported"]["format"] == "nir"
    assert not [m for m in entry["missing"] if m["artifact"] in ("eval.json", "fold.json")]


def test_no_membrane_floor_by_default(tmp_path):
    """NIR has no floor (nor have snnTorch, Norse, Rockpool): threshold_low goes to the int16
    state's limit, and the weights keep the scale they would have with a -threshold floor."""
    net = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), iaf(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3, bias=False), iaf())
    path = tmp_path / "m.nir"
    nir.write(path, sinabs_graph(net, (2, 8, 8)))
    for floor, low in (("none", -32768), ("threshold", None)):
        record = import_model(path, tmp_path / floor, floor=floor)
        network = load_imported(tmp_path / floor)[0]
        assert float(network[1].min_v_mem) == (-np.inf if floor == "none" else -1.0)
        compiled = compile_run(tmp_path / floor, "speck2f")
        core = compiled.config.cores[0]
        assert core.threshold_low == (low if low is not None else -core.threshold_high)
        assert f"({'none, as in NIR' if floor == 'none' else '--floor threshold'})" in \
            record["import"]["notes"][0]
    scales = [compile_run(tmp_path / f, "speck2f").quantized[0].scale for f in ("none", "threshold")]
    assert scales[0] == scales[1]


def test_import_without_data_needs_data_to_simulate(tmp_path, capsys):
    net = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), iaf(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3, bias=False), iaf())
    path = tmp_path / "m.nir"
    nir.write(path, sinabs_graph(net, (2, 8, 8)))
    record = import_model(path, tmp_path / "run")
    assert record["data"]["spec"] is None and record["data"]["class_names"] == ["0", "1", "2"]
    assert record["data"]["sensor_size"] == [8, 8, 2]
    compile_run(tmp_path / "run", "speck2f")
    with pytest.raises(DataSpecError, match="imported without --data.*pass --data SPEC"):
        simulate_run(tmp_path / "run")


def test_data_of_other_classes_or_sensor_is_refused(tmp_path):
    net = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), iaf(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3, bias=False), iaf())
    path = tmp_path / "m.nir"
    nir.write(path, sinabs_graph(net, (2, 8, 8)))
    with pytest.raises(DataSpecError, match="128x128 sensor does not give the network's 8x8 input"):
        import_model(path, tmp_path / "run", data="synthetic:gesture-tiny")


# ---- snnTorch ---------------------------------------------------------------------------------------

def test_snntorch_graph(tmp_path):
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), snn.Leaky(beta=0.9, init_hidden=True), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 3 * 3, 3),
                        snn.Leaky(beta=0.9, threshold=0.5, init_hidden=True, output=True))
    try:
        graph = export_to_nir(net, torch.zeros(1, 2, 8, 8))
    except TypeError as exc:  # snntorch 1.0 passes v_reset, which nir 1.0.4 lacks
        pytest.skip(f"this snntorch's exporter does not run with nir {nir.version}: {exc}")
    path = tmp_path / "snntorch.nir"
    nir.write(path, complete_shapes(graph))  # its Conv2d.input_shape and Flatten type are None
    record = import_model(path, tmp_path / "run")
    network = load_imported(tmp_path / "run")[0]
    neurons = [m for m in network if isinstance(m, sl.IAFSqueeze)]
    # r = tau / dt (dt 1e-4): unit gain, so the thresholds are snnTorch's own
    assert [float(m.spike_threshold) for m in neurons] == pytest.approx([1.0, 0.5])
    assert all(isinstance(m.reset_fn, sa.MembraneSubtract) for m in neurons)
    assert any(isinstance(m, nn.AvgPool2d) for m in network)
    notes = "\n".join(record["import"]["notes"])
    assert "leading batch dimension 1 of the Input dropped" in notes
    assert "the decay 0.9 per step" in notes
    compiled = compile_run(tmp_path / "run", "speck2f", bias_policy="drop")
    assert len(compiled.config.cores) == 2


# ---- Norse ------------------------------------------------------------------------------------------

def norse_or_skip():
    return pytest.importorskip(
        "norse.torch", reason="norse is not in the test extra (its torchvision dependency does not "
                              "import beside the CPU torch); pip install --no-deps norse")


def test_norse_graph(tmp_path):
    nt = norse_or_skip()
    torch.manual_seed(0)
    net = nt.SequentialState(nn.Conv2d(2, 4, 3, 2), nt.IAFCell(),
                             nn.Conv2d(4, 3, 4), nt.LIFBoxCell())
    graph = nt.to_nir(net, torch.zeros(1, 2, 9, 9))
    path = tmp_path / "norse.nir"
    nir.write(path, complete_shapes(graph))
    record = import_model(path, tmp_path / "run", reset="zero")
    network = load_imported(tmp_path / "run")[0]
    neurons = [m for m in network if isinstance(m, sl.IAFSqueeze)]
    assert [float(m.spike_threshold) for m in neurons] == pytest.approx([1.0, 1.0])
    assert all(isinstance(m.reset_fn, sa.MembraneReset) for m in neurons)
    assert record["num_classes"] == 3
    assert "--reset zero" in "\n".join(record["import"]["notes"])


def test_norse_graph_with_flatten_names_the_empty_node():
    nt = norse_or_skip()
    net = nt.SequentialState(nn.Conv2d(2, 4, 3), nt.IAFCell(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
                             nt.IAFCell())
    graph = nt.to_nir(net, torch.zeros(1, 2, 8, 8))
    with pytest.raises(CompileError, match=r"node '2' is empty \(None\).*Norse's to_nir has none "
                                           r"for nn.Flatten"):
        nir_to_network(graph)


# ---- Rockpool -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def without_samna():
    """Rockpool probes ``import samna`` at import time; the PyPI samna stub then tries to download
    the real one (asa_deploy's docs/speck-hardware.md section 0a). Block it for the import."""
    if "samna" in sys.modules:
        yield
        return
    sys.modules["samna"] = None
    try:
        yield
    finally:
        sys.modules.pop("samna", None)


def test_rockpool_graph(tmp_path):
    with without_samna():
        pytest.importorskip("rockpool.nn.modules")
        from rockpool.nn.combinators import Sequential
        from rockpool.nn.modules import LIFTorch, LinearTorch
        from rockpool.nn.modules.torch.nir import to_nir

    graph = to_nir(Sequential(LinearTorch((8, 4)), LIFTorch(4), LinearTorch((4, 3)), LIFTorch(3)))
    path = tmp_path / "rockpool.nir"
    nir.write(path, graph)
    with pytest.raises(CompileError, match=r"Input takes \[8\].*--input-shape C,H,W \(product 8\)"):
        import_model(path, tmp_path / "run")
    record = import_model(path, tmp_path / "run", input_shape=(2, 2, 2))
    network = load_imported(tmp_path / "run")[0]
    assert type(network[0]).__name__ == "Flatten"
    neurons = [m for m in network if isinstance(m, sl.IAFSqueeze)]
    # CubaLIF: r * dt / tau_mem = 1 at the chosen dt, w_in = 1: the threshold stays 1
    assert [float(m.spike_threshold) for m in neurons] == pytest.approx([1.0, 1.0])
    assert "synaptic current filter" in "\n".join(record["import"]["notes"])
    compile_run(tmp_path / "run", "speck2f", use_sensor=False)


# ---- torch.save'd Sequential ------------------------------------------------------------------------

def test_torch_sequential(tmp_path):
    net = tutorial_net()
    path = tmp_path / "net.pt"
    torch.save(net, path)
    with pytest.raises(AsaDeployError, match="pass --input-shape C,H,W"):
        import_model(path, tmp_path / "run")
    record = import_model(path, tmp_path / "run", input_shape=(2, 34, 34))
    assert record["import"]["format"] == "torch" and record["num_classes"] == 10
    network = load_imported(tmp_path / "run")[0]
    x = spikes_in((2, 34, 34))
    assert torch.equal(run(network, x), run(net, x))
    compile_run(tmp_path / "run", "speck2e")


# ---- bad input -----------------------------------------------------------------------------------------

def chain(*nodes: tuple[str, nir.NIRNode], shape=(2, 4, 4), edges=None) -> nir.NIRGraph:
    all_nodes = {"input": nir.Input(input_type={"input": np.array(shape)}), **dict(nodes),
                 "output": nir.Output(output_type={"output": np.array([1])})}
    names = list(all_nodes)
    return nir.NIRGraph(nodes=all_nodes, edges=edges or list(zip(names[:-1], names[1:], strict=True)))


def conv(cin=2, cout=3):
    return nir.Conv2d(input_shape=None, weight=np.ones((cout, cin, 3, 3), np.float32),
                      stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(cout, np.float32))


def if_node(threshold=1.0, shape=(3, 4, 4)):
    return nir.IF(r=np.ones(shape), v_threshold=np.broadcast_to(threshold, shape).copy())


def lif_node(tau, shape=(3, 4, 4), v_leak=0.0):
    tau = np.broadcast_to(np.asarray(tau, float), shape).copy()
    return nir.LIF(tau=tau, r=tau.copy(), v_leak=np.full(shape, v_leak), v_threshold=np.ones(shape))


def test_unsupported_node_is_named():
    li = nir.LI(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3))
    graph = chain(("c", conv()), ("n", if_node()), ("f", nir.Flatten(input_type=None, start_dim=0)),
                  ("a", nir.Affine(weight=np.ones((3, 48)), bias=np.zeros(3))), ("readout", li))
    with pytest.raises(CompileError, match=r"node 'readout' is a LI: a non-spiking leaky integrator"):
        nir_to_network(graph)


def test_recurrent_edge_is_named():
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "lif": lif_node(2.0, shape=(3,)), "w_rec": nir.Linear(weight=np.eye(3)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    inner = nir.NIRGraph(nodes=nodes, edges=[("input", "lif"), ("lif", "w_rec"),
                                             ("w_rec", "lif"), ("lif", "output")])
    graph = chain(("fc", nir.Affine(weight=np.ones((3, 32)), bias=np.zeros(3))),
                  ("rleaky", inner), shape=(32,))
    with pytest.raises(CompileError, match=r"recurrent edge 'rleaky.w_rec' -> 'rleaky.lif'"):
        nir_to_network(graph)


def test_branch_is_named():
    graph = chain(("c", conv()), ("n", if_node()),
                  edges=[("input", "c"), ("c", "n"), ("c", "output"), ("n", "output")])
    with pytest.raises(CompileError, match=r"node 'c' feeds \['n', 'output'\]"):
        nir_to_network(graph)


def test_per_neuron_leaks_are_refused():
    tau = np.linspace(1, 2, 48).reshape(3, 4, 4)
    with pytest.raises(CompileError, match=r"node 'n' \(LIF\): per-neuron leaks \(tau from 1 to 2\)"):
        nir_to_network(chain(("c", conv()), ("n", lif_node(tau))))
    with pytest.raises(CompileError, match=r"node 'n' \(LIF\): v_leak 0.5 != 0"):
        nir_to_network(chain(("c", conv()), ("n", lif_node(2.0, v_leak=0.5))))


def test_shapes_that_do_not_chain_are_named():
    with pytest.raises(CompileError, match=r"node 'c2' \(Conv2d\) takes 5 channels, but receives "
                                           r"\[3, 4, 4\]"):
        nir_to_network(chain(("c", conv()), ("n", if_node()), ("c2", conv(cin=5))))
    with pytest.raises(CompileError, match=r"node 'n' \(IF\): r of shape \[3, 2, 2\] "
                                           r"does not fit"):
        nir_to_network(chain(("c", conv()), ("n", if_node(shape=(3, 2, 2)))))
    with pytest.raises(CompileError, match=r"node 'a' takes 10 inputs but receives 48"):
        nir_to_network(chain(("c", conv()), ("n", if_node()), ("f", nir.Flatten(input_type=None, start_dim=0)),
                             ("a", nir.Affine(weight=np.ones((3, 10)), bias=np.zeros(3)))))


def test_pooling_larger_than_its_input_is_named():
    """Found by the fuzz test: a 2x2 pooling of a 1x1 map left a 0x0 layer (IndexError)."""
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                         padding=np.array([0, 0]))
    with pytest.raises(CompileError, match=r"node 'p' \(SumPool2d\): pooling 2 does not fit its "
                                           r"1x1 input"):
        nir_to_network(chain(("p", pool), shape=(1, 1, 1)))


def test_per_neuron_thresholds_collapse_with_a_warning():
    thresholds = np.ones((3, 4, 4))
    thresholds[0] = 3.0
    node = nir.IF(r=np.ones((3, 4, 4)), v_threshold=thresholds)
    network, info = nir_to_network(chain(("c", conv()), ("n", node)))
    assert float(network[1].spike_threshold) == 1.0
    assert info["warnings"] == ["n: per-neuron thresholds (v_threshold / gain) from 1 to 3 "
                                "collapsed to their median 1: a core has one threshold"]


def test_v_reset_from_a_newer_nir(tmp_path):
    """nir >= 1.0.6 writes v_reset (reset to that value): 0 is the chip's reset to zero."""
    path = tmp_path / "new.nir"
    nir.write(path, complete_shapes(chain(("c", conv()), ("n", if_node()))))
    with h5py.File(path, "r+") as f:
        f["node/nodes/n"].create_dataset("v_reset", data=np.zeros((3, 4, 4)))
    import_model(path, tmp_path / "run")
    assert isinstance(load_imported(tmp_path / "run")[0][1].reset_fn, sa.MembraneReset)
    with h5py.File(path, "r+") as f:
        f["node/nodes/n/v_reset"][...] = 0.25
    with pytest.raises(CompileError, match=r"node 'n': v_reset 0.25 != 0"):
        import_model(path, tmp_path / "run2")


@pytest.mark.parametrize("content, problem", [
    (b"", "not a model: empty"),
    (b"hello, I am a text file\n", "not a model: neither a NIR graph"),
])
def test_files_that_are_not_models(tmp_path, content, problem):
    path = tmp_path / "model.nir"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match=f"{path}: {problem}"):
        import_model(path, tmp_path / "run")


def test_torch_files_that_are_not_models(tmp_path):
    cases = {
        "state_dict.pt": (tutorial_net().state_dict(), "not a model: a state_dict"),
        "list.pt": ([1, 2], "not a model: it holds a list"),
        "module.pt": (nn.Conv2d(2, 2, 3), "a Conv2d, whose layer order cannot be read"),
    }
    for name, (obj, problem) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ArtifactError, match=f"{tmp_path / name}: {problem}"):
            import_model(tmp_path / name, tmp_path / "run")
    hdf5 = tmp_path / "other.h5"
    with h5py.File(hdf5, "w") as f:
        f.create_dataset("x", data=[1, 2])
    with pytest.raises(ArtifactError, match=f"{hdf5}: not a model: an HDF5 file without NIR"):
        import_model(hdf5, tmp_path / "run")


def test_cli_refuses_with_the_message(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    assert main(["import", str(path), "--out", str(tmp_path / "run")]) == 2
    assert f"asa-deploy import: error: {path}: not a model" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "missing.nir"), "--out", str(tmp_path / "r")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["import", str(path), "--out", str(tmp_path / "r"), "--input-shape", "2,34"]) == 2
    assert "must be C,H,W" in capsys.readouterr().err


# ---- whole recordings ------------------------------------------------------------------------------------

def test_whole_recording_windows_cover_every_event():
    from asa_deploy.data import open_dataset

    dataset = open_dataset("synthetic:gesture-tiny")
    windows = whole_recording_windows(dataset, [0, 1, 2], 100_000)
    assert len(windows) == 3 and len({w.n_bins for w in windows}) == 1
    for w, i in zip(windows, [0, 1, 2], strict=True):
        events, label = dataset[i]
        assert w.label == label and w.t_start == events["t"][0]
        assert w.t_end > events["t"][-1]

def test_a_short_recording_among_longer_ones_keeps_its_own_duration():
    from asa_deploy.data.events import EVENT_DTYPE

    class Recordings:  # 150 ms and 350 ms of events, dt 100 ms
        sources = ["short", "long"]

        def __getitem__(self, i):
            events = np.zeros(2, EVENT_DTYPE)
            events["t"] = [1_000, 1_000 + (149_999 if i == 0 else 349_999)]
            return events, i

    short, long = whole_recording_windows(Recordings(), [0, 1], 100_000)
    assert short.n_bins == long.n_bins == 4  # batched at the longest one's length
    assert (short.seconds, long.seconds) == (0.2, 0.4)  # each the bins its own events span


# ---- fuzz: any chain of NIR nodes imports or is refused with an AsaDeployError --------------------

def _random_node(draw, st):
    kind = draw(st.sampled_from(["conv", "if", "lif", "cuba", "sum", "avg", "flatten", "affine",
                                 "li", "scale"]))
    c = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    values = st.floats(-2, 3, allow_nan=False)
    if kind == "conv":
        k = draw(st.integers(1, 3))
        return nir.Conv2d(input_shape=None, weight=np.full((draw(st.integers(1, 4)), c, k, k),
                                                           draw(values), np.float32),
                          stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, 2)),
                          dilation=1, groups=draw(st.sampled_from([1, 1, 2])),
                          bias=np.zeros(1, np.float32))
    if kind in ("if", "lif", "cuba"):
        full = lambda: np.full(shape, draw(values))  # noqa: E731
        if kind == "if":
            return nir.IF(r=full(), v_threshold=full())
        if kind == "lif":
            return nir.LIF(tau=full(), r=full(), v_leak=np.zeros(shape), v_threshold=full())
        return nir.CubaLIF(tau_syn=full(), tau_mem=full(), r=full(), v_leak=np.zeros(shape),
                           v_threshold=full())
    if kind in ("sum", "avg"):
        k = draw(st.integers(1, 3))
        cls = nir.SumPool2d if kind == "sum" else nir.AvgPool2d
        return cls(kernel_size=np.array([k, k]), stride=np.array([k, draw(st.integers(1, 3))]),
                   padding=np.array([0, 0]))
    if kind == "flatten":
        return nir.Flatten(input_type=None, start_dim=draw(st.integers(-3, 1)), end_dim=-1)
    if kind == "affine":
        return nir.Affine(weight=np.full((draw(st.integers(1, 4)), draw(st.integers(1, 40))),
                                         draw(values)), bias=np.zeros(1))
    if kind == "li":
        return nir.LI(tau=np.ones(shape), r=np.ones(shape), v_leak=np.zeros(shape))
    return nir.Scale(scale=np.ones(shape))


def test_fuzz_nir_chains_import_or_are_refused():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from asa_deploy.chip.lower import lower

    @st.composite
    def graphs(draw):
        nodes = [(f"n{i}", _random_node(draw, st)) for i in range(draw(st.integers(1, 5)))]
        shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
        return chain(*nodes, shape=shape)

    # HYPOTHESIS_PROFILE=fuzz (tests/conftest.py) raises the count to its thousands
    @settings(max_examples=max(300, settings.default.max_examples), deadline=None)
    @given(graphs())
    def check(graph):
        try:
            network, info = nir_to_network(graph)
            lower(network, tuple(info["input_shape"]), bias_policy="leak")
        except AsaDeployError:
            pass

    check()
