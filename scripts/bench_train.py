"""Training and inference throughput of slice classifiers (slices/s), per backbone and input size.

    python scripts/bench_train.py --backbones resnet10 resnet18 efficientnet_v2_b0 efficientnet_v2_s --sizes 256 512

Times the network alone on random 2.5D inputs (9 channels = 3 slices x 3 windows): a training step
(forward, BCE loss, backward, AdamW step, with the batched augmentation) and inference (forward, no
grad). On CUDA it uses AMP (bf16) and channels_last, as the bundle does. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch


def _time(fn, warmup: int, iters: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["resnet10", "resnet18", "efficientnet_v2_b0"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[256])
    ap.add_argument("--batch", type=int, default=0, help="batch size (default: 16 on CPU, 64 on GPU)")
    ap.add_argument("--channels", type=int, default=9)
    ap.add_argument("--iters", type=int, default=0, help="timed iterations (default: 3 on CPU, 20 on GPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from hemwsl.networks import build_network
    from hemwsl.transforms.batch import BatchRandAffine

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (64 if cuda else 16)
    iters = args.iters or (20 if cuda else 3)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {batch}; {args.channels} input channels; {'AMP bf16 + channels_last' if cuda else 'fp32'}")
    print("| backbone | size | train slices/s | inference slices/s |")
    print("|---|---|---|---|")
    aug = BatchRandAffine()
    for backbone in args.backbones:
        for size in args.sizes:
            net = build_network(backbone, in_channels=args.channels, num_classes=1).to(device)
            fmt = torch.channels_last if cuda else torch.contiguous_format
            net = net.to(memory_format=fmt)
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
            x = torch.rand(batch, args.channels, size, size, device=device)
            y = (torch.rand(batch, 1, device=device) > 0.5).float()
            loss_fn = torch.nn.BCEWithLogitsLoss()

            def train_step():
                net.train()
                xb = aug(x).contiguous(memory_format=fmt)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    loss = loss_fn(net(xb).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            @torch.no_grad()
            def infer_step():
                net.eval()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    net(x.contiguous(memory_format=fmt))

            t_train = _time(train_step, 1 if not cuda else 3, iters, device)
            t_inf = _time(infer_step, 1 if not cuda else 3, iters, device)
            print(f"| {backbone} | {size} | {batch / t_train:.1f} | {batch / t_inf:.1f} |", flush=True)
            del net, opt


if __name__ == "__main__":
    main()
