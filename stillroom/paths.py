"""Where stillroom keeps its files: platformdirs, or everything under STILLROOM_HOME."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP = "stillroom"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


@dataclass(frozen=True)
class Paths:
    """The folders of one stillroom installation."""

    config_dir: Path
    data_dir: Path
    models_dir: Path
    logs_dir: Path
    run_dir: Path

    @classmethod
    def resolve(cls) -> Paths:
        """STILLROOM_HOME overrides every location; otherwise the platform's user folders."""
        home = os.environ.get("STILLROOM_HOME")
        if home:
            root = Path(home).expanduser().resolve()
            return cls(root / "config", root / "data", root / "models", root / "logs", root / "run")
        import platformdirs

        dirs = platformdirs.PlatformDirs(APP, appauthor=False)
        data = Path(dirs.user_data_dir)
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        run = Path(runtime) / APP if runtime else data / "run"
        return cls(Path(dirs.user_config_dir), data, data / "models", Path(dirs.user_log_dir), run)

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def database(self) -> Path:
        return self.data_dir / "stillroom.db"

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "daemon.lock"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "daemon.log"

    @property
    def cache_dir(self) -> Path:
        """Files stillroom derives and can rebuild: the encoder as GGUF, the base LLM as an HF
        folder for training. Deleting it costs time, never data."""
        return self.data_dir / "cache"

    @property
    def spool_file(self) -> Path:
        """Events waiting on disk while the database is stuck; replayed, then removed."""
        return self.data_dir / "spool.jsonl"

    @property
    def bus_state(self) -> Path:
        """The running daemon's dispatcher state (a stuck store), for `stillroom status`."""
        return self.run_dir / "bus.json"

    @property
    def token_file(self) -> Path:
        """The local token that guards the HTTP service's private routes."""
        return self.config_dir / "token"

    def ensure(self) -> Paths:
        """Create every folder, private to the user."""
        for folder in (
            self.config_dir,
            self.data_dir,
            self.models_dir,
            self.logs_dir,
            self.run_dir,
        ):
            private_dir(folder)
        return self


def private_dir(folder: Path) -> Path:
    """Make a folder (and parents) readable by the user alone."""
    folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(folder, PRIVATE_DIR)
    return folder


def private_file(path: Path) -> Path:
    """Create (if missing) a file readable by the user alone."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE)
    os.close(fd)
    os.chmod(path, PRIVATE_FILE)
    return path
