"""`stillroom service install | uninstall | status`: the daemon as a user service."""

from __future__ import annotations

import typer

from stillroom.cli.options import DryRunOption, console, err_console
from stillroom.paths import Paths
from stillroom.service import units

app = typer.Typer(
    help="Run the daemon at login: a systemd user unit (Linux) or a launchd agent (macOS).",
    no_args_is_help=True,
)


@app.command()
def install(dry_run: DryRunOption = False) -> None:
    """Write the service file, then enable and start the service."""
    plan = units.plan_install()
    if dry_run:
        console.print(f"would write {plan.path} (mode 0644):", markup=False)
        console.print(plan.text, markup=False, end="")
        _print_steps("would run", (*plan.before, *plan.after))
        return
    fresh = plan.was == "missing"
    outcome = units.install(plan)
    said = "unchanged" if plan.unchanged else "installed" if fresh else "replaced"
    console.print(f"{said}: {plan.path}", markup=False)
    _print_steps("ran", [r.step for r in outcome.results if r.ok])
    if fresh:
        _warn_if_daemon_runs()
    if outcome.ok:
        return
    for failed in outcome.failures():
        if failed.step.check:  # a failed best-effort step (unloading nothing) is normal
            _warn(f"`{failed.step.text}` failed: {failed.detail}")
    _warn(
        f"{plan.path} is installed, but {plan.manager} has not started it; "
        "run this in your login session (where the service manager answers):"
    )
    for step in outcome.pending:
        err_console.print(f"  {step.text}", markup=False, soft_wrap=True)


@app.command()
def uninstall(dry_run: DryRunOption = False) -> None:
    """Stop and disable the service, then remove the file stillroom wrote."""
    plan = units.plan_uninstall()
    if plan.was == "missing":
        console.print(f"not installed: {plan.path}", markup=False)
        return
    if dry_run:
        _print_steps("would run", plan.before)
        console.print(f"would remove {plan.path}", markup=False)
        _print_steps("would run", plan.after)
        return
    outcome = units.uninstall(plan)
    console.print(f"removed: {plan.path}", markup=False)
    for failed in outcome.failures():
        _warn(f"`{failed.step.text}` failed: {failed.detail}")


@app.command()
def status() -> None:
    """Say whether the service file is installed, what the manager says, and if the daemon runs."""
    from stillroom.daemon.lock import running_pid

    found = units.status()
    whose = {
        "missing": "not installed",
        "ours": "installed" if found.current else "installed, out of date (run install again)",
        "foreign": "present, not written by stillroom",
    }[found.was]
    console.print(f"file: {found.path} ({whose})", markup=False)
    for name, state in found.states.items():
        console.print(f"{name}: {state}", markup=False)
    pid = running_pid(Paths.resolve().lock_file)
    console.print(f"daemon: running (pid {pid})" if pid else "daemon: not running", markup=False)


def _print_steps(verb: str, steps: tuple[units.Step, ...] | list[units.Step]) -> None:
    for step in steps:
        console.print(f"{verb}: {step.text}", markup=False)


def _warn(text: str) -> None:
    err_console.print(f"warning: {text}", markup=False, soft_wrap=True)


def _warn_if_daemon_runs() -> None:
    """A daemon started by hand holds the lock: the service's own start exits at once."""
    from stillroom.daemon.lock import running_pid

    pid = running_pid(Paths.resolve().lock_file)
    if pid:
        _warn(
            f"a daemon started outside the service already runs (pid {pid}); the service "
            "cannot start beside it: stop that one, then start the service"
        )
