"""``train --memory lean`` (asa_deploy/train/memory.py): the lean conv block against torch's
conv -> BN -> avg pool, what it keeps, where it steps aside, across ranks, and the CLI around it."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
from helpers import CLI_DVS_TINY as CLI_TINY
from helpers import train_one_and_two_ranks
from torch import nn

from asa_deploy.cli import main
from asa_deploy.errors import ModelSpecError
from asa_deploy.nn import build_network, load_model_spec
from asa_deploy.nn.network import AvgPool2d
from asa_deploy.train import TrainConfig
from asa_deploy.train import memory as M
from asa_deploy.train.distributed import use_global_batch_norm


def conv_block(c_in: int, *, pool: int = 2, stride: int = 1, bias: bool = False) -> nn.Sequential:
    torch.manual_seed(c_in + pool + stride)
    block = nn.Sequential(nn.Conv2d(c_in, 12, 3, stride, 1, bias=bias), nn.BatchNorm2d(12),
                          *([AvgPool2d(pool)] if pool > 1 else []))
    with torch.no_grad():  # BN's scale and shift away from their starting 1 and 0
        block[1].weight.uniform_(0.3, 1.5)
        block[1].bias.uniform_(-0.5, 0.5)
    return block


def inputs(kind: str, c_in: int, rows: int = 45) -> torch.Tensor:
    torch.manual_seed(11)
    if kind == "spikes":
        return (torch.rand(rows, c_in, 10, 10) < 0.2).float()
    if kind == "dropped":  # spikes through dropout 0.1: 0 and 1 / 0.9
        return (torch.rand(rows, c_in, 10, 10) < 0.2).float() / 0.9
    if kind == "silent":  # a layer that has not fired yet
        return torch.zeros(rows, c_in, 10, 10)
    return torch.randn(rows, c_in, 10, 10)


def assert_near(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5) -> None:
    """Equal up to float rounding: the difference is small against the tensor as a whole (an
    element of a sum with cancellations may differ more relative to itself)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    if not want.is_floating_point():
        assert torch.equal(got, want)
        return
    assert float((got - want).norm()) <= rel * float(want.norm()) + 1e-7, \
        f"off by {float((got - want).norm()):.3g} against a norm of {float(want.norm()):.3g}"


def forward_backward(block, x, weights):
    leaf = x.clone().requires_grad_()
    out = block(leaf)
    (out * weights).sum().backward()
    return [out.detach(), leaf.grad, block[0].weight.grad, block[1].weight.grad,
            block[1].bias.grad, block[1].running_mean, block[1].running_var,
            block[1].num_batches_tracked]


@pytest.mark.parametrize("c_in", [2, 8])  # 2 x 3 x 3 = 18 multiply-adds per value: recomputed
@pytest.mark.parametrize("kind", ["spikes", "dropped", "silent", "currents"])
@pytest.mark.parametrize("pool,stride,bias", [(2, 1, False), (1, 1, False), (2, 2, True)])
def test_lean_block_equals_torch_up_to_rounding(monkeypatch, c_in, kind, pool, stride, bias):
    monkeypatch.setattr(M, "CHUNK_BYTES", 3000)  # many chunks, the last one short
    standard = conv_block(c_in, pool=pool, stride=stride, bias=bias)
    lean = copy.deepcopy(standard)
    assert M.use_lean_memory(lean) == 1 and type(lean) is M.LeanConvBlock
    x = inputs(kind, c_in)
    weights = torch.randn_like(standard(x)).detach()
    standard[1].reset_running_stats()
    want = forward_backward(standard, x, weights)
    got = forward_backward(lean, x, weights)
    for g, w in zip(got, want, strict=True):
        assert_near(g, w)
    # BN takes out any bias before it: its gradient is 0 but for rounding, both ways (a silent
    # input makes the output constant, and BN scales the rounding by 1 / sqrt(eps): not compared)
    if bias and kind != "silent":
        assert lean[0].bias.grad.abs().max() < 1e-3 and standard[0].bias.grad.abs().max() < 1e-3


@pytest.mark.parametrize("c_in,kind,kept_elements", [
    (8, "spikes", "input as bool, conv output"),
    (8, "silent", "input as bool, conv output"),
    (8, "currents", "input as float, conv output"),
    (2, "spikes", "input as bool only"),  # a 2-channel first layer is recomputed
])
def test_what_the_lean_block_keeps_for_the_backward(c_in, kind, kept_elements):
    x = inputs(kind, c_in).requires_grad_()
    y_numel = x.shape[0] * 12 * 10 * 10
    expected = {"input as bool, conv output": x.numel() + 4 * y_numel,
                "input as float, conv output": 4 * x.numel() + 4 * y_numel,
                "input as bool only": x.numel()}[kept_elements]
    kept = {}
    for name in ("standard", "lean"):
        block = conv_block(c_in)
        if name == "lean":
            M.use_lean_memory(block)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, saved=saved: saved.append(t) or t,
                                                      lambda t: t):
            block(x)
        big = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
               for t in saved if t is not None and t.numel() > 1000}  # not parameters
        kept[name] = sum(big.values())
    assert kept["lean"] == expected
    assert kept["standard"] == 4 * x.numel() + 4 * y_numel  # torch: x and the conv output
    assert kept["lean"] < kept["standard"] or kind == "currents"


def test_lean_blocks_step_aside_where_they_do_not_apply():
    block = conv_block(8)
    standard = copy.deepcopy(block)
    M.use_lean_memory(block)
    x = inputs("spikes", 8)
    block.eval(), standard.eval()
    with torch.no_grad():  # evaluation: torch's own layers, bit for bit
        assert torch.equal(block(x), standard(x))
    block.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not M._lean_applies(block, x.requires_grad_())
    assert M._lean_applies(block, x)
    max_pool = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.MaxPool2d(2))
    no_bn = nn.Sequential(nn.Conv2d(2, 4, 3), AvgPool2d(2))
    assert M.use_lean_memory(nn.ModuleList([max_pool, no_bn])) == 0
    assert type(max_pool) is nn.Sequential and type(no_bn) is nn.Sequential


def test_arch_a_turns_lean_with_the_same_state_dict():
    model = build_network(load_model_spec("arch-a"), 11, "asa2")
    keys = list(model.state_dict())
    assert M.use_lean_memory(model) == 3  # its three conv blocks
    assert list(model.state_dict()) == keys


def test_lean_block_across_two_identical_ranks(monkeypatch):
    """Two ranks holding the same rows: the statistics and BN's reductions of one process holding
    both copies; each rank's parameter gradients are that process's halves."""
    x, block = inputs("spikes", 8, rows=20), conv_block(8)
    twice = copy.deepcopy(block)
    M.use_lean_memory(twice)
    weights = torch.randn_like(block(x)).detach()
    block[1].reset_running_stats()
    want = forward_backward(twice, torch.cat([x, x]), torch.cat([weights, weights]))
    use_global_batch_norm(block)
    M.use_lean_memory(block)
    monkeypatch.setattr(M.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(M.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(M.dist, "all_reduce", lambda t: t.mul_(2))  # the other rank's equal share
    got = forward_backward(block, x, weights)
    assert_near(got[0], want[0][:20])  # outputs
    assert_near(got[1], want[1][:20])  # input gradients
    for g, w in zip(got[2:5], want[2:5], strict=True):  # parameter gradients: half each
        assert_near(g * 2, w)
    for g, w in zip(got[5:], want[5:], strict=True):  # running statistics, batches counted
        assert_near(g, w)


def test_lean_needs_float32_and_resumes_as_the_same_run():
    with pytest.raises(ModelSpecError, match="memory='lean' with amp='bf16'.*--amp off"):
        TrainConfig(memory="lean", amp="bf16")
    with pytest.raises(ModelSpecError, match="memory='thin'.*standard, lean"):
        TrainConfig(memory="thin")
    assert TrainConfig(memory="lean").differences(TrainConfig()) == []


def test_lean_training_run_is_the_standard_run_up_to_rounding(tmp_path, capsys):
    """One epoch each way: the same losses and validation accuracy, weights close."""
    runs = {}
    for mode in ("standard", "lean"):
        out = tmp_path / mode
        assert main(["train", *CLI_TINY, "--epochs", "1", "--memory", mode, "--out",
                     str(out)]) == 0
        runs[mode] = (json.loads((out / "train_log.jsonl").read_text().splitlines()[0]),
                      torch.load(out / "checkpoint.pt", weights_only=False))
    (log_s, ckpt_s), (log_l, ckpt_l) = runs["standard"], runs["lean"]
    assert ckpt_l["train_config"]["memory"] == "lean"
    assert log_l["loss"] == pytest.approx(log_s["loss"], rel=1e-4)
    assert log_l["val_accuracy_recording"] == log_s["val_accuracy_recording"]
    for name, w in ckpt_s["weights"].items():
        torch.testing.assert_close(ckpt_l["weights"][name], w, rtol=1e-3, atol=1e-4, msg=name)
    capsys.readouterr()
    assert main(["train", "--memory", "thin", "--out", str(tmp_path / "x")]) == 2
    assert "invalid choice: 'thin'" in capsys.readouterr().err


def test_lean_on_a_network_without_conv_blocks_says_so(tmp_path, capsys):
    spec = tmp_path / "no-bn.yaml"
    spec.write_text("name: no-bn\ninput: {channels: 2, height: 32, width: 32}\nT: 5\n"
                    "blocks:\n  - {type: conv, out: 4, pool: 2, bn: false}\n"
                    "  - {type: flatten}\n  - {type: fc, out: classes}\n")
    assert main(["train", "--data", "synthetic:gesture-tiny", "--model", str(spec), "--T", "5",
                 "--batch-size", "4", "--eval-windows", "2", "--epochs", "1", "--no-progress",
                 "--memory", "lean", "--out", str(tmp_path / "run")]) == 0
    assert ("--memory lean: model 'no-bn' has no conv -> BN -> avg pool block, so only the heap "
            "bound applies") in capsys.readouterr().out


def test_two_ranks_lean_match_one_process_lean(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    train_one_and_two_ranks(["train", *CLI_TINY, "--epochs", "1", "--memory", "lean"], single,
                            double, 29541)
    a, b = (torch.load(d / "checkpoint.pt", weights_only=False)["weights"] for d in (single, double))
    for name, w in a.items():
        torch.testing.assert_close(b[name], w, rtol=1e-4, atol=1e-5, msg=name)


def test_bound_heap_growth_sets_glibcs_threshold():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt: Linux only")
    assert M.bound_heap_growth() is True
