"""Data sets for image classification, in memory: `load_dataset` and what it builds on.

`pipeline` holds `load_dataset`, `LoadedData` and the `tf.data` pipelines (its
docstring describes the sources), `augmentation` the training augmentation,
`arrays` the checks of in-memory arrays, `tfds_source` TensorFlow Datasets
sources, `folders` folders and archives of class folders, and `decoding` the
threaded image decoding and the cache of decoded images.
"""

from keras_robust.data.arrays import validate_arrays
from keras_robust.data.augmentation import augment_batch
from keras_robust.data.folders import ARCHIVE_EXTENSIONS, IMAGE_EXTENSIONS, list_image_folders
from keras_robust.data.pipeline import LoadedData, load_dataset

__all__ = [
    "ARCHIVE_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "LoadedData",
    "augment_batch",
    "list_image_folders",
    "load_dataset",
    "validate_arrays",
]
