from pathlib import Path

from setuptools import find_packages, setup

# Pinned requirements; environment.yml lists the same pins (a test checks that they agree).
# torch is pinned to the release whose CPU build is installed first by .ci/run and the README.
INSTALL_REQUIRES = [
    "torch==2.13.0",
    "lightning==2.6.6",
    "torchmetrics==1.9.0",
    "gymnasium[mujoco]==1.4.0",
    "mujoco==3.3.0",
    "metaworld==3.1.1",
    "stable-baselines3==2.9.2",
    "omegaconf==2.4.0",
    "jsonargparse[signatures,omegaconf]==4.53.0",
    "tensorboard==2.21.0",
    "h5py==3.16.0",
    "numpy==2.4.6",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "pillow==13.0.0",
    "scikit-learn==1.9.1",
]

# The notebooks are executed by the test suite (tests/test_notebooks.py) in a Jupyter kernel.
# transformers: the reference Prompt-DT (GPT-2) that benchmarks/plm_step_vs_reference.py times ours against.
# minari: `promptdiff data export-minari / import-minari` (optional; the tests exercise it, so "test" has it too).
EXTRAS_REQUIRE = {"test": ["pytest==9.2.0", "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0",
                           "transformers==5.24.0", "minari[hdf5]==0.5.4", "submitit==1.5.4"],
                  "minari": ["minari[hdf5]==0.5.4"],
                  "slurm": ["submitit==1.5.4"]}

setup(
    name="promptdiff",
    version="0.1.0",
    description="Prompt tuning of pre-trained decision transformers with diffusion-generated prompts",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["promptdiff=promptdiff.cli.main:main"]},
)
