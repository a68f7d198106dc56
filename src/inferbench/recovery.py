"""What to type after a run went wrong: commands that work when pasted.

``rerun_command`` rebuilds the Snakemake command line of the run in progress
(cores, Snakefile and folder when not the defaults, the user's --configfile and
--config), so that a hint printed by a job (``io.rebuild_hint``) reruns the same
workflow on the same config. ``stale_lock_hint`` finds the lock a killed Snakemake
left behind. Light: the Snakefile imports this at parse time.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

# Environment variable through which the workflow hands its rerun command to jobs (a
# shell variable, not a param: it never reruns a job).
RERUN_ENV = "IB_RERUN"


# Options of the run a rerun must keep (where its jobs run), each with one value.
CARRIED_OPTIONS = ("--profile", "--workflow-profile", "--executor", "-e", "--jobs", "-j")


def rerun_command(cores: int | None, snakefile: Path, workdir: Path,
                  configfiles: Sequence[Path | str], config_args: Sequence[str],
                  argv: Sequence[str] = ()) -> list[str]:
    """``snakemake --cores N [...]`` for the current run, without targets."""
    command = ["snakemake", "--cores", str(cores or 1)]
    for index, word in enumerate(argv[:-1]):
        if word in CARRIED_OPTIONS:
            command += [word, argv[index + 1]]
    if Path(snakefile).resolve().parent != Path(workdir).resolve():
        command += ["--snakefile", str(snakefile), "--directory", str(workdir)]
    if configfiles:
        command += ["--configfile", *(str(f) for f in configfiles)]
    if config_args:
        command += ["--config", *config_args]
    return command


def rerun_prefix() -> str:
    """The run's command (from the workflow, through RERUN_ENV), or a plain one."""
    return os.environ.get(RERUN_ENV) or "snakemake --cores 1"


def lock_files(workdir: Path) -> list[Path]:
    folder = Path(workdir) / ".snakemake" / "locks"
    return sorted(folder.glob("*.lock")) if folder.is_dir() else []


def live_snakemake_dirs(exclude: Iterable[int] = ()) -> set[Path]:
    """Working folders of the Snakemake processes running on this machine."""
    import psutil

    skip = set(exclude)
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        info = proc.info
        if info["pid"] in skip or not info.get("cmdline") or not info.get("cwd"):
            continue
        if any(Path(part).name == "snakemake" or part == "snakemake"
               for part in info["cmdline"][:3]):
            found.add(Path(info["cwd"]).resolve())
    return found


def stale_lock_hint(workdir: Path, argv: Sequence[str],
                    live_dirs: set[Path] | None = None) -> str | None:
    """A message with the command that clears a lock no running Snakemake holds, or None.

    Snakemake's lock files record no process id, so a lock counts as stale when no
    Snakemake process on this machine works in this folder. A run on another machine
    sharing the folder cannot be seen, so the lock is never removed here: the user
    types the command (after checking nothing else runs there).
    """
    if "--unlock" in argv or "--nolock" in argv:
        return None
    locks = lock_files(workdir)
    if not locks:
        return None
    if live_dirs is None:
        # not this process; its parents count (a job's Snakemake holds the lock)
        live_dirs = live_snakemake_dirs(exclude={os.getpid()})
    if Path(workdir).resolve() in live_dirs:
        return None  # a running Snakemake holds it: Snakemake's own error applies
    command = shlex.join(["snakemake", *argv[1:], "--unlock"])
    return (f"inferbench: {Path(workdir) / '.snakemake' / 'locks'} holds {len(locks)} lock "
            "file(s), but no Snakemake process on this machine works in this folder: a run "
            "was killed (SIGKILL, power loss) before it could unlock. If no run on another "
            f"machine uses this folder, type\n  {command}\nthen run your command again.")


def stale_summary(summary: Path, rows: Sequence[Path]) -> str | None:
    """Why ``summary`` contradicts the current rows (a row missing or newer), or None."""
    if not summary.exists():
        return None
    built = summary.stat().st_mtime
    missing = [r for r in rows if not r.exists()]
    newer = [r for r in rows if r.exists() and r.stat().st_mtime > built]
    if not (missing or newer):
        return None
    parts = []
    if newer:
        parts.append(f"{len(newer)} row(s) were rewritten after it (e.g. {newer[0]})")
    if missing:
        parts.append(f"{len(missing)} row(s) it shows no longer exist (e.g. {missing[0]})")
    return "; ".join(parts)
