"""Seeing a run from its files alone (no MPI, no models): progress, rate and last metrics, and plots.

    from hpc_rlhf.monitor.progress import run_progress
    p = run_progress("runs/demo")           # step / total, steps per hour, ETA, last reward/KL/..., checkpoint
    from hpc_rlhf.monitor.plot import plot_run
    png, data = plot_run("runs/demo")       # RUN_DIR/metrics.png and the plotted series as metrics_plot.json

`hpc-rlhf status RUN_DIR` and `hpc-rlhf plot RUN_DIR` are the commands over these; they work for RL, SFT
and reward-model runs, running or finished, local or on Slurm.
"""
