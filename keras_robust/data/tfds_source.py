"""TensorFlow Datasets sources (`"tfds:NAME"`), loaded into memory without touching the network unless asked."""

import numpy as np

from keras_robust.data.arrays import _check_arrays, _resize_array


def _load_tfds(name, split, data_dir, download, image_size):
    """Loads a TFDS split into memory as uint8 images and int32 labels."""
    # Imported here because it is slow to import and only TFDS sources use it.
    import tensorflow_datasets as tfds

    if not name:
        raise ValueError(
            "Expected a TFDS dataset name after 'tfds:'. "
            "Received: source='tfds:'"
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise ValueError(
            f"Unknown TFDS dataset {name!r}. Check the name against "
            f"`tfds.list_builders()`. Received: source='tfds:{name}'"
        ) from None
    # Checked before anything can touch the network: machines of this
    # project are often offline, and a download attempt would hang or fail
    # with an unhelpful error.
    if not builder.is_prepared():
        if not download:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir} "
                "and download=False, so nothing was downloaded (this machine "
                "may be offline). To use local data instead, pass a directory "
                "or .tar.gz of class folders as the source (for example "
                "'../shared/data/cifar10-jpeg.tar.gz'), or prepare the TFDS "
                "data on a machine with network access and pass its "
                "directory as data_dir. Pass download=True (on the command "
                "line: --download) to download it here."
            )
        builder.download_and_prepare()
    images, labels = tfds.as_numpy(
        builder.as_dataset(split=split, as_supervised=True, batch_size=-1)
    )
    if images.ndim == 4 and images.shape[-1] == 1:
        # Same as folder sources, which convert grayscale files to RGB.
        images = np.repeat(images, 3, axis=-1)
    images, labels = _check_arrays(images, labels)
    if image_size is not None:
        images = _resize_array(images, image_size)
    label_feature = builder.info.features[builder.info.supervised_keys[1]]
    if hasattr(label_feature, "names"):
        class_names = list(label_feature.names)
    else:
        class_names = [str(i) for i in range(int(labels.max()) + 1)]
    return images, labels, class_names
