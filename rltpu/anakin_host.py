"""Anakin mode's thin host loop around the compiled program (``rltpu.anakin.Program``):
one compiled call at a time, counted, checkpointed and logged by the run's ``Run``, with
the same stopping rules, run directory and summary as Ray mode.
"""
from __future__ import annotations

from rltpu import checkpoint, devices, resume as resuming
from rltpu.anakin import Program, finished_returns
from rltpu.faults import StopRequest
from rltpu.metrics import run_start_time
from rltpu.plan import Plan
from rltpu.rundir import create_run_dir
from rltpu.run import Run


def train(plan: Plan, quiet: bool = False, resume: checkpoint.Restored | None = None,
          on_row=None) -> dict:
    """Anakin mode's run of a validated plan: the same stopping rules, run directory,
    metrics, checkpoints and summary as Ray mode (``rltpu.run.train``; ``on_row``, a
    ``rltpu.run.RowHook``).

    Stops are checked between compiled calls, so a run may overshoot
    ``run.total_env_steps`` by up to ``run.updates_per_call`` updates.
    """
    t_start = run_start_time()
    run = plan.run
    with StopRequest() as stop:  # from the start: a stop while compiling still saves
        create_run_dir(plan, resume)
        # A resumed run's envs get a new seed, so they do not replay the first leg's episodes.
        env_seed = (run.seed * 10_000 + 1000 + 7919 * (0 if resume is None else resume.step)) % 2**31
        program = Program(plan.fns, plan.jax_env, devices.make_mesh(plan.num_devices), run.seed,
                          env_seed, run.batch_size, run.unroll_length, run.updates_per_call,
                          plan.spec)
        if resume is not None:
            program.restore(resume.state, resume.step)
            resuming.announce_resume(resume, program.state.params)
        # No actors and no incoming data in this mode: only skipped updates can happen.
        no_faults = {"actor_restarts": 0, "dropped_unrolls": 0, "rejected_unrolls": 0}
        bookkeeping = Run(plan, resume, t_start, lambda: no_faults, quiet=quiet, stop=stop,
                          on_row=on_row)
        evaluation = None
        if run.evaluates:  # compiled now, before training's clock starts
            from rltpu.evaluation import JaxEvaluation
            evaluation = JaxEvaluation(plan, bookkeeping, program.state.params, program.version,
                                       0 if resume is None else resume.step)
        devices.wait(program.state)
        bookkeeping.started()  # the program is compiled and the envs reset
        while not _call(program, bookkeeping, stop):
            if evaluation is not None:
                evaluation.step(program.version, program.state.params)
        bookkeeping.end(program.version, program.state)
        if evaluation is not None:  # the final params, unless a signal asks for a quick end
            evaluation.finish(program.version, program.state.params, final=not stop.requested)
        env_sps = bookkeeping.leg_env_steps / bookkeeping.train_s
        return bookkeeping.summary(program.version, stop.signal_name, {
            "num_actors": 0, "num_envs": run.batch_size, "actor_sps": None,
            "mean_policy_lag": 0.0, "actor_sps_each": None,
            "learner_sps_per_device": env_sps / plan.num_devices,
            "bottleneck": None})  # one program: nothing waits for anything


def _call(program: Program, bookkeeping: Run, stop: StopRequest) -> bool:
    """Runs one compiled call and counts what it did; returns whether the run is over."""
    outputs = program.run()
    metrics = dict(outputs.metrics)
    first = program.version - len(outputs.env_steps) + 1
    for i, skipped in enumerate(metrics.pop("update_skipped")):
        bookkeeping.update_skipped(bool(skipped), first + i)
    samples = bookkeeping.plan.run.samples_per_batch * len(outputs.env_steps)
    bookkeeping.record(int(outputs.env_steps.sum()), finished_returns(outputs), samples,
                       episodes=int(outputs.episodes))
    done = bookkeeping.reached or bookkeeping.out_of_steps or stop.requested
    bookkeeping.checkpoint_if_due(program.version, program.state)
    # The latest update's metrics, as a Ray-mode row carries its latest update's.
    bookkeeping.log(program.version, done, lambda _: {
        "policy_lag": 0.0, **{k: float(v[-1]) for k, v in metrics.items()}})
    return done
