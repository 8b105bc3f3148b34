"""Where a data source's files live, and the check of a source named on the command line.

Imports nothing heavy: the command line checks `--data` before TensorFlow loads.
"""

import dataclasses
import os

TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Where the files of a data source are found, and whether it may be fetched.

    Args:
        data_dir: TensorFlow Datasets' data directory (for `tfds:NAME` sources).
        cache_dir: Where decoded images of folders and archives are cached
            (default `~/.cache/keras_robust`).
        download: Whether a `tfds:NAME` source may download and prepare its data.
        manual_dir: Where TensorFlow Datasets finds manually downloaded archives
            (ImageNet's tar files).
    """

    data_dir: str = None
    cache_dir: str = None
    download: bool = False
    manual_dir: str = None

    @classmethod
    def from_args(cls, args):
        """The options given by parsed command-line flags (`--data-dir`, ...)."""
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})

    def load_keywords(self):
        """The keywords `load_dataset` takes from these options."""
        return dict(data_dir=self.data_dir, cache_dir=self.cache_dir, download=self.download)


def check_source(source):
    """Raises `FileNotFoundError` when a folder or archive source does not exist."""
    if isinstance(source, str) and source.startswith(TFDS_PREFIX):
        return
    path = os.path.expanduser(os.fspath(source))
    if not os.path.exists(path):
        hint = ""
        if os.sep not in path and not os.path.splitext(path)[1]:
            hint = f"; for the TFDS data set of that name, write '{TFDS_PREFIX}{path}'"
        raise FileNotFoundError(f"Image source not found: {path}{hint}")
