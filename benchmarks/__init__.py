"""Speed and memory benchmarks of LastViT (run from the repository root: ``python -m benchmarks.bench_lastvit``).

- `contenders`: the shapes and models timed, how each is built, the LastViT/peer pairs;
- `harness`: device clocks (wall clock, CUDA events), interleaved rounds, timed callables, FLOP counts;
- `cpu`: the CPU sections (parity and op checks, inference, training step, torch.compile);
- `memory`: CPU peak memory, one fresh process per contender;
- `gpu`: the GPU section (bf16/fp16, sdpa and flash attention, inference and training, CUDA peak memory);
- `stats`: per-round paired ratios, sign-test intervals, the speed verdict;
- `report`, `report_gpu`: the Markdown reports;
- `bench_lastvit`: the command line.
"""
