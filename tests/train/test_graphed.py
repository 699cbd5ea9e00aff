"""GraphedStep: warm-up, capture, replay and fallback (on CPU with a stand-in for CUDA graphs),
the engine's cuda_graph path end to end on CPU through that stand-in, and the real thing on a
GPU when one is present."""

import contextlib
import warnings

import pytest
import torch
import torch.nn.functional as F

from normlab.data import load_dataset
from normlab.train import RunConfig, fit
from normlab.train import build as build_module
from normlab.train import graphed as graphed_module
from normlab.train import metrics as M
from normlab.train.graphed import GraphedStep

TIMING = {M.STEP_MS, M.EPOCH_SECONDS}


def fake_capture(fn):
    """Like a CUDA graph: records without running; replay runs `fn` and rewrites one output."""
    output = torch.full((), float("nan"))

    def replay():
        output.copy_(fn())

    return replay, output


class Recorder:
    """A step that trains a tiny linear model and logs which inputs each call saw."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(4, 3)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.seen = []

    def __call__(self, x, y):
        self.seen.append(x[0, 0].item())
        loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def test_warms_up_captures_then_replays_with_each_new_batch():
    batches = _batches(6)
    eager, step = Recorder(), Recorder()
    graphed = GraphedStep(step, warmup_steps=2, capture=fake_capture, warmup_context=contextlib.nullcontext)
    for i, (x, y) in enumerate(batches):
        expected = eager(x, y)
        got = graphed(x, y)
        assert torch.equal(got, expected)  # same loss on every step: warm-up and replay
        assert graphed.captured == (i >= 2)
    # capture ran nothing; each replay saw the batch copied into the captured input
    assert step.seen == [x[0, 0].item() for x, _ in batches]
    for a, b in zip(eager.model.parameters(), step.model.parameters()):
        assert torch.equal(a, b)


def test_a_failed_capture_falls_back_to_eager_with_the_same_numbers():
    def failing_capture(fn):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    batches = _batches(5)
    eager, step = Recorder(), Recorder()
    graphed = GraphedStep(step, warmup_steps=1, capture=failing_capture, warmup_context=contextlib.nullcontext)
    with pytest.warns(RuntimeWarning, match="could not be captured .operation not permitted"):
        losses = [graphed(x, y) for x, y in batches]
    assert not graphed.captured
    assert graphed.fallback_reason == "operation not permitted when stream is capturing"
    assert [float(v) for v in losses] == [float(eager(x, y)) for x, y in batches]
    assert len(step.seen) == 5  # every batch trained exactly once


def test_a_new_batch_shape_after_capture_is_an_error():
    graphed = GraphedStep(Recorder(), warmup_steps=1, capture=fake_capture, warmup_context=contextlib.nullcontext)
    for x, y in _batches(2):
        graphed(x, y)
    with pytest.raises(
        ValueError,
        match=r"replays the inputs it captured: \(8, 4\) torch.float32, "
        r"\(8,\) torch.int64; got \(5, 4\) .*drop_last=True",
    ):
        graphed(torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \(8, 4\) torch.float32, None"):
        graphed(torch.randn(8, 4), None)


def test_none_inputs_pass_through_to_the_captured_step():
    seen = []

    def step(x, extra):
        seen.append(extra)
        return x.sum()

    graphed = GraphedStep(step, warmup_steps=1, capture=fake_capture, warmup_context=contextlib.nullcontext)
    assert [float(graphed(torch.full((2,), float(i)), None)) for i in range(4)] == [0.0, 2.0, 4.0, 6.0]
    assert seen == [None] * 4  # warm-up, then 3 replays (the capture itself runs nothing)


def test_warmup_must_create_the_optimizer_state_first():
    with pytest.raises(ValueError, match="warmup_steps must be >= 1.*got 0"):
        GraphedStep(Recorder(), warmup_steps=0)


# --- the engine's cuda_graph path ----------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", shape=(1, 16), num_classes=4, train_size=320, test_size=64)


def _config(**kw):
    base = dict(
        dataset="synthetic",
        hidden=[16, 16],
        batch_size=32,
        epochs=2,
        lr=1e-2,
        schedule={"name": "cosine", "warmup_steps": 3},
        optim={"grad_clip": 1.0},
    )
    return RunConfig(**{**base, **kw})


def _rows(config, data, **kw):
    rows = []
    result = fit(config, dataset=data, on_metrics=lambda s, e, v: rows.append((s, e, dict(v))), **kw)
    return result, [(s, e, {k: v for k, v in values.items() if k not in TIMING}) for s, e, values in rows]


def test_cuda_graph_on_cpu_is_refused(data):
    with pytest.raises(ValueError, match="cuda_graph=true .* is a GPU option, but the run is on cpu"):
        fit(_config(cuda_graph=True), dataset=data)


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    """Let fit take its cuda_graph path on the CPU, with `fake_capture` as the graph."""
    captured = []

    def capture(fn):
        captured.append(fn)
        return fake_capture(fn)

    real_check = build_module.check_execution
    monkeypatch.setattr(
        build_module,
        "check_execution",
        lambda config, device, ctx: real_check(config.model_copy(update={"cuda_graph": False}), device, ctx),
    )
    monkeypatch.setattr(graphed_module, "capture_cuda_graph", capture)
    monkeypatch.setattr(graphed_module, "side_stream", contextlib.nullcontext)
    return captured


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_engine_graph_path_reproduces_the_eager_run_exactly(data, graphs_on_cpu, optimizer):
    # capturable optimizer, tensor lr, clipping, weight decay, loss windows: with an lr that
    # float32 holds exactly (the graph's lr is a float32 tensor) every metric is bit-equal
    kw = dict(
        optimizer=optimizer, lr=2.0**-6, schedule={"name": "constant"}, optim={"grad_clip": 1.0, "weight_decay": 1e-3}
    )
    plain, plain_rows = _rows(_config(**kw), data)
    graph, graph_rows = _rows(_config(cuda_graph=True, **kw), data)
    assert len(graphs_on_cpu) == 1  # captured once, replayed for the rest of the run
    assert graph.status == plain.status == "finished" and graph.steps == plain.steps == 18
    assert graph_rows == plain_rows


def test_engine_graph_path_augments_inside_the_step(graphs_on_cpu):
    # image data with random crop + flip: the captured step gathers, augments and normalizes
    # its batch from the copied-in indices and crop/flip parameters
    images = load_dataset("synthetic", shape=(3, 8, 8), num_classes=4, train_size=256, test_size=64, uint8=True)
    kw = dict(
        model="cnn",
        hidden=[8],
        norm="batch",
        augment=True,
        epochs=2,
        lr=2.0**-7,
        schedule={"name": "constant"},
        optim={},
    )
    plain, plain_rows = _rows(_config(**kw), images)
    graph, graph_rows = _rows(_config(cuda_graph=True, **kw), images)
    assert len(graphs_on_cpu) == 1 and graph.steps == plain.steps == 14
    assert graph_rows == plain_rows


def test_engine_graph_path_follows_the_schedule(data, graphs_on_cpu):
    # a cosine schedule fills the lr tensor each step; float32 lr vs float64 lr differ in the
    # last bits only, so the runs agree closely (and the lr metric, computed, exactly).
    # norm="none": with BN, the bias before a BN has a gradient of pure rounding noise, which
    # Adam scales up to lr-sized steps, so the last-bit lr difference shows in the biases
    # (~1e-2) and in the eval loss (~2e-3), not in what is learned
    plain, plain_rows = _rows(_config(norm="none"), data)
    graph, graph_rows = _rows(_config(norm="none", cuda_graph=True), data)
    assert [(s, e, sorted(v)) for s, e, v in graph_rows] == [(s, e, sorted(v)) for s, e, v in plain_rows]
    lrs = [(v[M.LR], w[M.LR]) for (_, _, v), (_, _, w) in zip(plain_rows, graph_rows) if M.LR in v]
    assert len(set(p for p, _ in lrs)) > 2 and all(p == g for p, g in lrs)
    for (_, _, g), (_, _, p) in zip(graph_rows, plain_rows):
        for name in p:
            assert g[name] == pytest.approx(p[name], rel=1e-5, abs=1e-6), name


def test_engine_graph_path_resumes_from_a_checkpoint(data, graphs_on_cpu, tmp_path):
    config = _config(cuda_graph=True, epochs=3)
    _, whole = _rows(config, data)
    path = tmp_path / "run.pt"
    first = fit(config, dataset=data, checkpoint_path=path, stop=lambda: True)
    assert first.status == "stopped"
    resumed, rows = _rows(config, data, checkpoint_path=path)
    assert resumed.status == "finished" and resumed.steps == 27
    final_whole = {k: v for _, _, values in whole for k, v in values.items()}
    final_resumed = {k: v for _, _, values in rows for k, v in values.items()}
    assert final_resumed[M.TEST_ACC] == pytest.approx(final_whole[M.TEST_ACC])
    assert final_resumed[M.TEST_LOSS] == pytest.approx(final_whole[M.TEST_LOSS], rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_cuda_graph_on_gpu_matches_eager(data, optimizer):
    # an lr float32 holds exactly and no schedule: the graph's float32 lr tensor is then the
    # eager run's lr, and the same kernels run in the same order
    kw = dict(
        device="cuda", optimizer=optimizer, norm="batch", bn_impl="torch", lr=2.0**-6, schedule={"name": "constant"}
    )
    plain, plain_rows = _rows(_config(**kw), data)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not be captured.*")  # no fallback
        graph, graph_rows = _rows(_config(cuda_graph=True, **kw), data)
    assert graph.steps == plain.steps
    assert graph.final[M.TEST_LOSS] == pytest.approx(plain.final[M.TEST_LOSS], rel=1e-4)
    losses = [
        (v[M.TRAIN_LOSS], w[M.TRAIN_LOSS]) for (_, _, v), (_, _, w) in zip(plain_rows, graph_rows) if M.TRAIN_LOSS in v
    ]
    assert losses and all(g == pytest.approx(p, rel=1e-4) for p, g in losses)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_captures_a_compiled_model_on_gpu(data):
    kw = dict(device="cuda", norm="batch", bn_impl="torch", compile=True, precision="bf16")
    plain = fit(_config(**{**kw, "compile": False}), dataset=data)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not be captured.*")  # no fallback
        graph = fit(_config(cuda_graph=True, **kw), dataset=data)
    assert graph.steps == plain.steps and graph.status == "finished"
    # Inductor fuses differently from eager (bf16 rounding): close, not equal
    assert graph.final[M.TEST_LOSS] == pytest.approx(plain.final[M.TEST_LOSS], rel=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_on_gpu_falls_back_for_a_host_reading_layer(data):
    # momentum=None averages with 1 / num_batches_tracked, read on the host: not capturable
    config = _config(device="cuda", cuda_graph=True, bn_impl="torch", norm_kwargs={"momentum": None})
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        result = fit(config, dataset=data)
    assert result.status == "finished" and result.steps == 18
