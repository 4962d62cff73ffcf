"""Rows per second of ``saelab.training.train_sae`` against the best minimal plain-PyTorch loop, same run.

Setting (full run): d_in 576, d_sae 4608, batch 4096, Adam, fp32, a fixed synthetic activation tensor; relu and
topk (k=32). The plain loops are written here, as a careful person would write them with nothing else to do
(contiguous batches, fused Adam, the L1 term as one reduction; TopK with a dense decode and with the k-winner
``embedding_bag`` decode); each architecture's ratio is against its fastest plain loop. The fp32 matmul rate
measured in the same run says how close a step is to what the machine can do. Medians over repeats
(the machine is shared and noisy), ours and the plain loops interleaved.

A separate process measures peak RSS while training on a large activation tensor: the trainer must not copy it.

``--ddp N`` measures data-parallel training instead: TopK ``train_sae`` under torchrun with N processes (gloo on
CPU, one GPU each with nccl when CUDA is present) against one process, interleaved in the same run. On CPU the
one-process run is timed both at one thread and at N threads (the cores the N processes use between them).

    python benchmarks/sae_train_throughput.py            # full run (several minutes)
    python benchmarks/sae_train_throughput.py --quick    # seconds: small sizes, same code paths
    python benchmarks/sae_train_throughput.py --ddp 2    # 2 processes vs 1, rows/s
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from saelab.sae import SAE, SAEConfig
from saelab.training import train_sae


def matmul_gflops(batch: int, d_in: int, d_sae: int, repeats: int = 5) -> float:
    a, b = torch.randn(batch, d_in), torch.randn(d_in, d_sae)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * batch * d_in * d_sae / statistics.median(times) / 1e9


def plain_params(d_in: int, d_sae: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    return [torch.nn.Parameter(t) for t in (W_dec.t().clone(), torch.zeros(d_sae), W_dec, torch.zeros(d_in))]


def plain_relu(acts: torch.Tensor, d_sae: int, batch: int, steps: int, l1: float = 0.2) -> float:
    """The minimal ReLU SAE loop: encode, decode, MSE + decoder-norm-weighted L1, fused Adam. Returns seconds."""
    W_enc, b_enc, W_dec, b_dec = params = plain_params(acts.shape[1], d_sae)
    opt = torch.optim.Adam(params, lr=1e-4, fused=True)
    start = time.perf_counter()
    for step in range(steps):
        x = acts[step * batch:(step + 1) * batch]
        f = torch.addmm(b_enc, x, W_enc).relu()
        recon = torch.addmm(b_dec, f, W_dec)
        loss = (recon - x).pow(2).sum(-1).mean() + l1 * (f.sum(0) @ W_dec.norm(dim=1)) / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def plain_topk(acts: torch.Tensor, d_sae: int, batch: int, steps: int, k: int, sparse_decode: bool) -> float:
    """The minimal TopK loop: dense decode (scatter + matmul) or k-winner decode (embedding_bag). Seconds."""
    W_enc, b_enc, W_dec, b_dec = params = plain_params(acts.shape[1], d_sae)
    opt = torch.optim.Adam(params, lr=1e-4, fused=True)
    start = time.perf_counter()
    for step in range(steps):
        x = acts[step * batch:(step + 1) * batch]
        pre = torch.addmm(b_enc - b_dec @ W_enc, x, W_enc)  # = (x - b_dec) W_enc + b_enc, without a grad for x
        values, idx = pre.topk(k, dim=-1, sorted=False)
        values = values.relu()
        if sparse_decode:
            recon = F.embedding_bag(idx, W_dec, per_sample_weights=values, mode="sum") + b_dec
        else:
            f = torch.zeros_like(pre).scatter(-1, idx, values)
            recon = torch.addmm(b_dec, f, W_dec)
        loss = (recon - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def ours(acts: torch.Tensor, cfg: SAEConfig, batch: int, steps: int) -> float:
    """The library's trainer with its defaults (input scaling, b_dec at the geometric median, logging, dead
    latents tracked, AuxK on for topk), timed for the whole call, on the same threads as the plain loops."""
    sae = SAE(cfg, seed=0)
    start = time.perf_counter()
    train_sae(sae, acts, steps=steps, batch_size=batch, lr=1e-4, progress=False, num_threads=torch.get_num_threads())
    return time.perf_counter() - start


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


def peak_rss_child(rows: int, d_in: int, d_sae: int, batch: int, steps: int) -> None:
    """Run in a subprocess: RSS before the data, then peak RSS while training relu and topk on it."""
    torch.set_num_threads(1)  # memory, not speed: keep the shared machine free
    # A tiny warm-up run first: the first optimiser step imports ~100 MB of torch modules, which is not data.
    train_sae(SAE(SAEConfig(d_in, 16, "relu")), torch.randn(256, d_in), steps=2, batch_size=128, progress=False)
    base_kb = _proc_status_kb("VmHWM")  # (ru_maxrss would carry the parent's peak over the exec)
    acts = torch.empty(rows, d_in)
    for start in range(0, rows, 65536):  # filled in chunks: a temporary the size of the data would skew the peak
        acts[start:start + 65536].normal_()
    data_kb = _proc_status_kb("VmHWM")
    for cfg in (SAEConfig(d_in, d_sae, "relu"), SAEConfig(d_in, d_sae, "topk", k=32)):
        train_sae(SAE(cfg), acts, steps=steps, batch_size=batch, progress=False)
    peak_kb = _proc_status_kb("VmHWM")
    model_bytes = (2 * d_in * d_sae + d_in + d_sae) * 4
    print(json.dumps({"base_mb": base_kb / 1024, "after_data_mb": data_kb / 1024, "peak_mb": peak_kb / 1024,
                      "activations_mb": rows * d_in * 4 / 2**20, "model_grads_adam_mb": 4 * model_bytes / 2**20}))


def ddp_child(d_in: int, d_sae: int, batch: int, k: int, steps: int, threads: int) -> None:
    """One process of a ``--ddp`` measurement (started by torchrun): rank 0 prints the global rows/s."""
    import torch.distributed as dist

    from saelab import distributed

    device = distributed.local_device("auto")
    torch.set_num_threads(threads)
    if distributed.launched():
        dist.init_process_group(distributed.backend_for(device))
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        acts = torch.randn(steps * batch, d_in, generator=gen, device=device)
        cfg = SAEConfig(d_in, d_sae, "topk", k=k)
        train_sae(SAE(cfg, seed=0), acts, steps=2, batch_size=batch, progress=False, num_threads=threads)
        history = train_sae(SAE(cfg, seed=0), acts, steps=steps, batch_size=batch, lr=1e-4, progress=False,
                            num_threads=threads)
        if distributed.is_main():
            print(json.dumps({"rows_per_s": history.rows_per_second, "processes": distributed.world_size(),
                              "threads": threads, "device": str(device)}))
    finally:
        distributed.teardown()


def ddp_main(processes: int, quick: bool, steps: int | None, repeats: int | None, as_json: bool) -> None:
    """Interleaved runs of N processes and of one, each a fresh torchrun; medians and same-repeat ratios."""
    d_in, d_sae, batch, k = (64, 512, 1024, 8) if quick else (576, 4608, 4096, 32)
    steps, repeats = steps or (5 if quick else 10), repeats or 3
    cuda = torch.cuda.is_available()
    settings = {f"{processes} processes x 1 thread": (processes, 1), "1 process x 1 thread": (1, 1)}
    if not cuda:
        settings[f"1 process x {processes} threads"] = (1, processes)
    runs: dict[str, list[float]] = {}
    for repeat in range(repeats):
        names = list(settings) if repeat % 2 == 0 else list(settings)[::-1]
        for name in names:
            nproc, threads = settings[name]
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                       __file__, "--ddp-child", *map(str, (d_in, d_sae, batch, k, steps, threads))]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs.setdefault(name, []).append(json.loads(done.stdout.strip().splitlines()[-1])["rows_per_s"])
    rows_per_s = {name: statistics.median(v) for name, v in runs.items()}
    many, one = f"{processes} processes x 1 thread", "1 process x 1 thread"
    ratio = statistics.median([m / o for m, o in zip(runs[many], runs[one])])
    result = {"setting": {"d_in": d_in, "d_sae": d_sae, "batch": batch, "k": k, "steps": steps, "repeats": repeats,
                              "processes": processes, "device": "cuda" if cuda else "cpu", "torch": torch.__version__},
              "rows_per_s": rows_per_s, "runs": runs, "ratio_ddp_vs_one_process": ratio}
    if not cuda:
        same_cores = f"1 process x {processes} threads"
        result["ratio_ddp_vs_one_process_same_cores"] = statistics.median(
            [m / o for m, o in zip(runs[many], runs[same_cores])])
    if as_json:
        print(json.dumps(result))
        return
    print(f"TopK train_sae, d_in {d_in}, d_sae {d_sae}, global batch {batch}, k {k}; {steps} steps x {repeats} "
          f"repeats on {'cuda' if cuda else 'cpu'}, torch {torch.__version__}")
    for name, value in rows_per_s.items():
        print(f"  {name:28s} {value:8.0f} rows/s   (runs {', '.join(f'{v:.0f}' for v in runs[name])})")
    print(f"{processes} processes / 1 process (median of same-repeat ratios): {ratio:.2f}x")
    if not cuda:
        print(f"{processes} processes / 1 process with {processes} threads: "
              f"{result['ratio_ddp_vs_one_process_same_cores']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, runs in seconds")
    parser.add_argument("--steps", type=int, help="timed steps per run")
    parser.add_argument("--repeats", type=int, help="runs per trainer (median reported)")
    parser.add_argument("--threads", type=int, help="torch threads for every trainer (default: torch's; 1 in --quick)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--ddp", type=int, metavar="N", help="data-parallel: N processes vs 1 (torchrun)")
    parser.add_argument("--rss-child", nargs=5, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-child", nargs=6, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        peak_rss_child(*args.rss_child)
        return
    if args.ddp_child:
        ddp_child(*args.ddp_child)
        return
    if args.ddp is not None:
        if args.ddp < 2:
            raise ValueError(f"--ddp must be 2 or more processes, got {args.ddp}")
        ddp_main(args.ddp, args.quick, args.steps, args.repeats, args.json)
        return
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    if args.quick:
        d_in, d_sae, batch, k, steps, repeats, rss_rows = 64, 512, 1024, 8, args.steps or 5, args.repeats or 3, 400_000
    else:
        d_in, d_sae, batch, k, steps, repeats, rss_rows = 576, 4608, 4096, 32, args.steps or 8, args.repeats or 5, 1_000_000
    acts = torch.randn(steps * batch, d_in, generator=torch.Generator().manual_seed(0))
    gflops = matmul_gflops(batch, d_in, d_sae)
    runs: dict[str, list[float]] = {}
    trainers = {
        "ours relu": lambda: ours(acts, SAEConfig(d_in, d_sae, "relu"), batch, steps),
        "plain relu": lambda: plain_relu(acts, d_sae, batch, steps),
        "ours topk": lambda: ours(acts, SAEConfig(d_in, d_sae, "topk", k=k), batch, steps),
        "ours topk, matryoshka 4 groups": lambda: ours(acts, SAEConfig(d_in, d_sae, "topk", k=k, matryoshka_groups=4),
                                                       batch, steps),
        "plain topk, dense decode": lambda: plain_topk(acts, d_sae, batch, steps, k, sparse_decode=False),
        "plain topk, k-winner decode": lambda: plain_topk(acts, d_sae, batch, steps, k, sparse_decode=True),
    }
    for name, run in trainers.items():  # one untimed warm-up each (allocator, thread pool, kernels)
        run()
    gflops_runs = [gflops]
    names = list(trainers)
    for repeat in range(repeats):
        # Reverse the order every other repeat, so that a slow stretch of a busy machine hits both sides.
        for name in names if repeat % 2 == 0 else names[::-1]:
            runs.setdefault(name, []).append(steps * batch / trainers[name]())
        gflops_runs.append(matmul_gflops(batch, d_in, d_sae))
    gflops = statistics.median(gflops_runs)
    rows_per_s = {name: statistics.median(v) for name, v in runs.items()}
    best_topk = max(("plain topk, dense decode", "plain topk, k-winner decode"), key=rows_per_s.get)
    # Ratios from runs made next to each other (same repeat), then the median: steadier than a ratio of medians.
    paired = {"relu": [o / p for o, p in zip(runs["ours relu"], runs["plain relu"])],
              "topk": [o / p for o, p in zip(runs["ours topk"], runs[best_topk])],
              # What the nested-prefix loss costs: three more k-winner decodes per step.
              "matryoshka": [m / o for m, o in zip(runs["ours topk, matryoshka 4 groups"], runs["ours topk"])]}
    # A dense ReLU step is five (batch x d_in x d_sae) GEMMs (2 forward, 3 backward): the matmul-bound ceiling.
    ceiling = gflops * 1e9 / (5 * 2 * d_in * d_sae)
    rss = subprocess.run([sys.executable, __file__, "--rss-child", str(rss_rows), str(d_in), str(d_sae), str(batch),
                          "3"], capture_output=True, text=True, check=True)
    mem = json.loads(rss.stdout.strip().splitlines()[-1])
    result = {
        "setting": {"d_in": d_in, "d_sae": d_sae, "batch": batch, "k": k, "steps": steps, "repeats": repeats,
                        "threads": torch.get_num_threads(), "torch": torch.__version__},
        "matmul_gflops": gflops, "dense_step_ceiling_rows_per_s": ceiling, "rows_per_s": rows_per_s,
        "ratio_relu": statistics.median(paired["relu"]), "ratio_topk": statistics.median(paired["topk"]),
        "ratio_matryoshka_vs_topk": statistics.median(paired["matryoshka"]),
        "paired_ratios": paired, "best_plain_topk": best_topk, "memory": mem,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"d_in {d_in}, d_sae {d_sae}, batch {batch}, k {k}; {steps} steps x {repeats} repeats, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"fp32 matmul ({batch}x{d_in} @ {d_in}x{d_sae}, median through the run): {gflops:.0f} GFLOP/s "
          f"-> a dense ReLU step (5 GEMMs) caps at {ceiling:.0f} rows/s")
    for name, value in rows_per_s.items():
        spread = f"{min(runs[name]):.0f}-{max(runs[name]):.0f}"
        print(f"  {name:30s} {value:8.0f} rows/s   (range {spread})")
    print(f"ours / best plain loop (median of same-repeat ratios): relu {result['ratio_relu']:.2f}x "
          f"({', '.join(f'{r:.2f}' for r in paired['relu'])}), topk {result['ratio_topk']:.2f}x vs {best_topk} "
          f"({', '.join(f'{r:.2f}' for r in paired['topk'])})")
    print(f"matryoshka (4 nested prefixes) / plain topk training: {result['ratio_matryoshka_vs_topk']:.2f}x "
          f"({', '.join(f'{r:.2f}' for r in paired['matryoshka'])})")
    model_mb = mem["model_grads_adam_mb"]
    used = mem["peak_mb"] - mem["base_mb"]
    print(f"peak RSS training on {mem['activations_mb']:.0f} MB of activations: {mem['peak_mb']:.0f} MB "
          f"({mem['base_mb']:.0f} MB interpreter + torch before the data); above that {used:.0f} MB = "
          f"{used / (mem['activations_mb'] + model_mb):.2f}x (activations + model, grads, Adam state "
          f"{model_mb:.0f} MB)")


if __name__ == "__main__":
    main()
