"""Data sets for image classification, in memory: `load_dataset` and what it builds on.

`pipeline` holds `load_dataset`, `LoadedData` and the `tf.data` pipelines (its
docstring describes the sources), `augmentation` the training augmentation,
`arrays` the checks of in-memory arrays, `tfds_source` TensorFlow Datasets
sources, `folders` folders and archives of class folders, `decoding` the
threaded image decoding and the cache of decoded images, `options` where a
source's files live (`DataOptions`), `streaming` data sets too large for memory
(ImageNet) and `image_files` single image files (the command line's, the demo's).
"""

from keras_robust.lazy_loading import lazy_attributes

# Public name -> the module holding it; they load on first use, so that the
# TensorFlow-free parts (`options`, `folders`) import without TensorFlow.
_PUBLIC = {
    "ARCHIVE_EXTENSIONS": "keras_robust.data.folders",
    "IMAGE_EXTENSIONS": "keras_robust.data.folders",
    "DataOptions": "keras_robust.data.options",
    "LoadedData": "keras_robust.data.pipeline",
    "augment_batch": "keras_robust.data.augmentation",
    "list_image_folders": "keras_robust.data.folders",
    "load_dataset": "keras_robust.data.pipeline",
    "validate_arrays": "keras_robust.data.arrays",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_attributes(globals(), _PUBLIC)
