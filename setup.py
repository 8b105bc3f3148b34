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
    # export/ and serving/ sit beside keras_robust/ (the design card) but install
    # inside it, so nothing named plainly `export` lands in site-packages.
    packages=find_packages(include=["keras_robust", "keras_robust.*"])
    + [f"keras_robust.{folder}" for folder in ("export", "serving")]
    + [f"keras_robust.{folder}.{package}" for folder in ("export", "serving") for package in find_packages(folder)],
    package_dir={"keras_robust.export": "export", "keras_robust.serving": "serving"},
    package_data={
        "keras_robust.serving": ["static/*"],
        "keras_robust.serving.open_inference": ["protos/*"],
        "keras_robust.models.zoo": ["files/*"],
        "keras_robust.reporting": ["sample_images/*"],
    },
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        "tensorboard",
        "numpy",
        "pillow",
        "tqdm",
        "matplotlib",
        "tf2onnx>=1.16",
        "onnx",
        "onnxruntime",
        "fastapi>=0.110",
        "uvicorn>=0.29",
        # TF Serving's gRPC protos and service stubs; it adds only itself, as
        # TensorFlow (its one dependency, with grpcio) is already required.
        "tensorflow-serving-api",
    ],
    extras_require={
        # The clients the serving tests run unchanged, and the property-based tests' generators.
        "dev": ["pytest>=7", "hypothesis>=6.100", "schemathesis>=4.30", "selenium>=4.10", "pyyaml>=6",
                "tritonclient[http,grpc]", "kserve>=0.21"],
        "gpu": ["tensorflow[and-cuda]>=2.16", "onnxruntime-gpu"],
    },
    entry_points={"console_scripts": ["keras-robust=keras_robust.cli:main"]},
)
