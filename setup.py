"""keras-robust: robust training and adversarial explanations for Keras."""

from setuptools import find_packages, setup

setup(
    name="keras-robust",
    version="0.1.0",
    description=(
        "Robust image classifiers and adversarial explanations for Keras "
        "(Woods, Chen & Teuscher, Nature Machine Intelligence 2019)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_robust", "keras_robust.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        "tensorboard",
        "numpy",
        "pillow",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest>=7"],
        "gpu": ["tensorflow[and-cuda]>=2.16", "onnxruntime-gpu"],
    },
    entry_points={"console_scripts": ["keras-robust=keras_robust.cli:main"]},
)
