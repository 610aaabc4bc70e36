from setuptools import find_packages, setup

setup(
    name="scratchnet-esc50",
    version="0.1.0",
    description="Environmental sound classification from raw audio with a from-scratch "
                "NumPy/CuPy deep-learning and DSP stack",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["scratchnet", "scratchnet.*", "dsp", "dsp.*",
                                    "experiments", "experiments.*"]),
    package_data={"experiments": ["checkpoints/*.npz", "serve/assets/*"]},
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "scipy>=1.8", "soundfile>=0.12", "matplotlib>=3.5",
                      "tqdm>=4.60", "threadpoolctl>=3.1"],
    extras_require={
        "gpu": ["cupy-cuda12x"],
        # ONNX export and running it (experiments.export, experiments.monitor --onnx).
        "export": ["onnx>=1.14", "onnxruntime>=1.16"],
        # Data-parallel training over MPI (train_esc50 --distributed): mpi4py and MPICH's
        # wheel, whose mpiexec runs as root too (Open MPI's refuses without a flag).
        "mpi": ["mpi4py>=3.1", "mpich"],
        # playwright drives the system's Chromium in the web app's browser test; the export
        # and MPI tests need those extras.
        "test": ["pytest>=7", "playwright>=1.40", "onnx>=1.14", "onnxruntime>=1.16",
                 "mpi4py>=3.1", "mpich"],
        # Outside references for benchmarks and skipped-if-missing tests only.
        "bench": ["torch", "librosa"],
    },
)
