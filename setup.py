from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "geodepth" / "_version.py").read_text(), version)

extras = {
    # Open3D: `open3d` is the CUDA build; `open3d-cpu` is smaller and is the one whose
    # open3d.ml.torch loads with CPU torch. Both provide the `open3d` module.
    "viz": ["open3d>=0.18", "matplotlib>=3.7"],
    "viz-cpu": ["open3d-cpu>=0.18", "matplotlib>=3.7"],
    "mesh": ["trimesh>=4"],
    "test": ["pytest>=7", "trimesh>=4", "scipy>=1.10"],
    "bench": ["opencv-python-headless>=4.8", "pykdtree>=1.3", "scipy>=1.10"],
    "gpu": ["triton>=3.0"],
    # faster exact CPU paths: k-d tree KNN (pykdtree, else scipy), numba-compiled IP-Basic
    "cpu": ["pykdtree>=1.3", "scipy>=1.10", "numba>=0.60"],
}
extras["all"] = sorted({d for k, v in extras.items() if k != "viz" for d in v})

setup(
    name="geodepth",
    version=version["__version__"],
    description="Point-cloud-native depth completion from LiDAR and camera",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["geodepth", "geodepth.*"]),
    package_data={"geodepth": ["_data/*/*", "models/weights/*"]},
    python_requires=">=3.10",
    # torch is deliberately unpinned: users keep whatever (CPU or CUDA) build they have.
    install_requires=["torch>=2.3", "numpy>=1.24", "pillow>=9", "pyyaml>=6", "tqdm>=4.60",
                      "torch-geometric>=2.4"],
    extras_require=extras,
    entry_points={"console_scripts": ["geodepth=geodepth.cli:main"]},
    license="MIT",
)
