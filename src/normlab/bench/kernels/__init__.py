"""The Triton BatchNorm kernels against torch and the copy-bandwidth limit (`normlab bench kernels`).

One module per job, the shared pieces in one place:

- `matrix`: the shapes x dtypes x layouts, counted bytes, a result row, the summary.
- `timing`: where it runs (GPU, or the CPU interpreter for a dry run), GPU time from CUDA-graph
  replays, the torch-vs-normlab table, the per-kernel breakdown.
- `tuning`: the candidate knob changes (`V4_CHANGES`, `V4_KNOBS`), the sweep plan, and their
  timings next to the adopted knobs (`normlab.kernels.launch.KNOBS`).
- `resources`: registers, spills and shared memory of every plan, compiled offline for an H100.
- `run`: the entry point (`bench_kernels`, `bench_kernel_resources`, the scripts' `main`).

Nothing is imported here: the job modules import Triton, which must see `TRITON_INTERPRET`
before normlab's kernels are decorated, and `run` sets it for a dry run first.
"""
