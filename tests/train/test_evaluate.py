import torch
import torch.nn.functional as F

from normlab.models import build_model
from normlab.train import accuracy_and_loss, train_mode_accuracy


def _batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_eval_mode_accuracy_and_loss_match_one_full_pass():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8), 3, hidden=[8], norm="batch")
    model.train()
    model(torch.randn(64, 1, 8) * 3 + 1)  # move the running statistics off their init
    x, y = torch.randn(50, 1, 8), torch.randint(0, 3, (50,))
    acc, loss = accuracy_and_loss(model, _batches(x, y, 16))  # uneven last batch
    model.eval()
    logits = model(x)
    assert acc == (logits.argmax(1) == y).sum().item() / 50
    torch.testing.assert_close(loss, F.cross_entropy(logits, y).item(), rtol=1e-6, atol=0)


def test_train_mode_accuracy_uses_batch_stats_and_leaves_no_trace():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8), 3, hidden=[8], norm="batch")
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(48, 1, 8), torch.randint(0, 3, (48,))
    acc = train_mode_accuracy(model, _batches(x, y, 16))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training
    expected = []
    with torch.no_grad():
        for xb, yb in _batches(x, y, 16):
            expected.append((model(xb).argmax(1) == yb).float())  # train mode: batch statistics
    assert acc == torch.cat(expected).sum().item() / 48
