"""The slice-context classifier of Ramananda & Sundaresan 2023 (``seq_<backbone>``): shapes, the two paths, a
hand-computed bidirectional LSTM, the loss, the sequence dataset and its batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hemwsl.errors import HemwslInputError
from hemwsl.networks import build_network
from hemwsl.networks.sequence import SequenceLoss, SliceSequenceNet, is_sequence_network


def _net(context="lstm", **kw):
    torch.manual_seed(0)
    return build_network("seq_resnet10", in_channels=3, num_classes=1,
                         options={"context": context, "hidden": 8, **kw}).eval()


@pytest.mark.parametrize("context", ["lstm", "transformer"])
def test_shapes_and_the_slice_path(context):
    net = _net(context)
    assert isinstance(net, SliceSequenceNet) and is_sequence_network(net)
    x = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        seq = net(x)
        seq2, slc = net(x, heads=True)
        flat = net(x.reshape(10, 3, 32, 32))
        enc = net.encoder(x.reshape(10, 3, 32, 32))
    assert seq.shape == slc.shape == flat.shape == (10, 1)
    assert torch.allclose(seq, seq2)
    # (B, C, H, W): the fine-tuned encoder with its own Linear, the path the CAM engine explains
    assert torch.allclose(flat, enc) and torch.allclose(slc, enc, atol=1e-6)
    assert not torch.allclose(seq, slc)
    with pytest.raises(HemwslInputError):
        net(torch.randn(3, 32, 32))


def test_context_reaches_every_slice_both_ways():
    net = _net("lstm")
    x = torch.randn(1, 6, 3, 32, 32)
    y = x.clone()
    y[0, 0] = torch.randn(3, 32, 32)  # change the first slice only
    with torch.no_grad():
        a, b = net(x), net(y)
        # the slice head sees one slice: only slice 0 moves
        sa, sb = net(x[0]), net(y[0])
    assert (a - b).abs()[-1] > 0  # the last slice's sequence logit hears the first slice
    assert torch.allclose(sa[1:], sb[1:]) and (sa[0] - sb[0]).abs() > 0


def _lstm_by_hand(x, w_ih, w_hh, b):
    """One direction of an LSTM, the equations of Hochreiter & Schmidhuber as PyTorch orders the gates
    (input, forget, cell, output)."""
    h = np.zeros(w_hh.shape[1])
    c = np.zeros(w_hh.shape[1])
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    out = []
    for xt in x:
        g = w_ih @ xt + w_hh @ h + b
        i, f, gg, o = np.split(g, 4)
        c = sig(f) * c + sig(i) * np.tanh(gg)
        h = sig(o) * np.tanh(c)
        out.append(h)
    return np.array(out)


def test_sequence_logits_match_a_hand_computed_bidirectional_lstm():
    net = _net("lstm")
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        _, feats = net.slice_features(x[0])
        seq = net(x)[:, 0].numpy()
    f = feats.numpy().astype(np.float64)
    p = {k: v.detach().numpy().astype(np.float64) for k, v in net.context.named_parameters()}
    fwd = _lstm_by_hand(f, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"] + p["bias_hh_l0"])
    bwd = _lstm_by_hand(f[::-1], p["weight_ih_l0_reverse"], p["weight_hh_l0_reverse"],
                        p["bias_ih_l0_reverse"] + p["bias_hh_l0_reverse"])[::-1]
    h = np.concatenate([fwd, bwd], axis=1)
    expected = h @ net.head.weight.detach().numpy().T[:, 0] + net.head.bias.item()
    np.testing.assert_allclose(seq, expected, rtol=1e-4, atol=1e-5)


def test_encoder_initialised_from_the_slice_classifier(tmp_path):
    torch.manual_seed(1)
    clf = build_network("resnet10", in_channels=3, num_classes=1)
    torch.save(clf.state_dict(), tmp_path / "clf.pt")
    net = build_network("seq_resnet10", in_channels=3, num_classes=1, pretrained_path=tmp_path / "clf.pt")
    enc = net.encoder.state_dict()
    assert all(torch.equal(enc[k], v) for k, v in clf.state_dict().items())
    # a whole slice-sequence checkpoint loads as it is
    torch.save(net.state_dict(), tmp_path / "seq.pt")
    again = build_network("seq_resnet10", in_channels=3, num_classes=1, pretrained_path=tmp_path / "seq.pt")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in net.state_dict().items())


def test_bad_options_are_one_line_errors():
    with pytest.raises(HemwslInputError, match="sequence context"):
        build_network("seq_resnet10", options={"context": "gru"})
    with pytest.raises(HemwslInputError, match="hidden"):
        build_network("seq_resnet10", options={"hidden": 0})
    with pytest.raises(HemwslInputError, match="multiple of 2 x heads"):
        build_network("seq_resnet10", options={"context": "transformer", "hidden": 10, "heads": 4})


def test_sequence_loss_hand_values():
    seq = torch.tensor([[2.0], [-1.0]])
    slc = torch.tensor([[0.5], [0.0]])
    y = torch.tensor([[1.0], [0.0]])
    bce = lambda z, t: float(np.mean([np.log1p(np.exp(-zi)) if ti else np.log1p(np.exp(zi)) for zi, ti in zip(z, t)]))  # noqa: E731
    expected = bce([2.0, -1.0], [1, 0]) + 0.5 * bce([0.5, 0.0], [1, 0])
    assert float(SequenceLoss(slice_weight=0.5)((seq, slc), y)) == pytest.approx(expected, rel=1e-6)
    assert float(SequenceLoss(slice_weight=0.0)((seq, slc), y)) == pytest.approx(bce([2.0, -1.0], [1, 0]), rel=1e-6)
    assert float(SequenceLoss()(seq, y)) == pytest.approx(bce([2.0, -1.0], [1, 0]), rel=1e-6)
    with pytest.raises(HemwslInputError):
        SequenceLoss(slice_weight=-1)


def test_sequences_batches_and_prepare_batch(synthetic_root):
    from hemwsl.constants import IMAGE, LABEL, PATIENT, SEQUENCE_LENGTH, SLICE_INDEX
    from hemwsl.data import build_datalist
    from hemwsl.data.dataset import SliceDataset, SliceSequences, balanced_sampler, collate_sequences
    from hemwsl.engines.classifier import PrepareBatch, batch_augmentation

    dl = build_datalist("ct-ich", synthetic_root)[:2]
    ds = SliceDataset(dl, num_slices=3, windows=["brain"], spatial_size=(32, 32))
    depths = [int(ds.cache[v][IMAGE].shape[-1]) for v in range(2)]
    seqs = SliceSequences(ds, 4)
    assert len(seqs) == sum(d - 3 for d in depths)
    item = seqs[1]
    assert item[IMAGE].shape == (4, 3, 32, 32) and item[SLICE_INDEX].tolist() == [1, 2, 3, 4]
    assert torch.equal(item[IMAGE][0], ds[1][IMAGE]) and item[PATIENT] == [ds[1][PATIENT]] * 4
    labels = ds.labels()
    assert seqs.labels()[1] == int(labels[1:5].any())
    whole = SliceSequences(ds, None)
    assert len(whole) == 2 and len(whole[1][PATIENT]) == depths[1]
    assert len(list(balanced_sampler(seqs, num_samples=10))) == 10

    batch = collate_sequences([seqs[0], seqs[5]])
    assert batch[IMAGE].shape == (8, 3, 32, 32) and batch[LABEL].shape == (8, 1) and batch[SEQUENCE_LENGTH] == 4
    assert len(batch[PATIENT]) == 8 and batch[SLICE_INDEX].tolist() == [0, 1, 2, 3, 5, 6, 7, 8]
    with pytest.raises(HemwslInputError, match="one length"):
        collate_sequences([whole[0], whole[1]] if depths[0] != depths[1] else [seqs[0], whole[0]])

    # one augmentation per sequence: identical slices stay identical, the network gets (B, S, C, H, W)
    same = {**batch, IMAGE: batch[IMAGE][:1].repeat(8, 1, 1, 1)}
    x, y = PrepareBatch(augment=batch_augmentation(prob=1.0, seed=3))(same)
    assert x.shape == (2, 4, 3, 32, 32) and y.shape == (8, 1)
    assert torch.allclose(x[0, 0], x[0, 3]) and not torch.allclose(x[0, 0], same[IMAGE][0])
    with pytest.raises(HemwslInputError, match="no per-sample transform"):
        SliceSequences(SliceDataset(dl, num_slices=3, spatial_size=(32, 32), transform=lambda d: d), 4)
