"""boxunet: self-configuring 3D medical image segmentation from masks or bounding boxes."""
from setuptools import find_packages, setup

CONSOLE_SCRIPTS = {
    "boxunet_plan_and_preprocess": "boxunet.cli.plan_and_preprocess:main",
    "boxunet_train": "boxunet.cli.train:main",
    "boxunet_benchmark": "boxunet.cli.benchmark:main",
    "boxunet_predict": "boxunet.cli.predict:main",
    "boxunet_export_onnx": "boxunet.cli.export_onnx:main",
    "boxunet_pseudo_labels": "boxunet.cli.pseudo_labels:main",
    "boxunet_evaluate": "boxunet.cli.evaluate:main",
    "boxunet_box_report": "boxunet.cli.box_report:main",
    "boxunet_determine_postprocessing": "boxunet.cli.postprocessing:main_determine",
    "boxunet_apply_postprocessing": "boxunet.cli.postprocessing:main_apply",
    "boxunet_ensemble": "boxunet.cli.ensemble:main",
    "boxunet_find_best_configuration": "boxunet.cli.find_best_configuration:main",
    "boxunet_generate_demo": "dataset_conversion.generate_demo:main",
    "boxunet_convert_kits19": "dataset_conversion.kits:main_kits19",
    "boxunet_convert_kits21": "dataset_conversion.kits:main_kits21",
    "boxunet_convert_kits23": "dataset_conversion.kits:main_kits23",
    "boxunet_convert_msd": "dataset_conversion.msd:main",
    "boxunet_convert_nnunet": "dataset_conversion.nnunet:main",
    "boxunet_labels_to_boxes": "dataset_conversion.labels_to_boxes:main",
}

setup(
    name="boxunet",
    version="0.1.0",
    description="Self-configuring 3D medical image segmentation trained from voxel masks or bounding boxes",
    packages=find_packages(include=["boxunet", "boxunet.*", "dataset_conversion", "dataset_conversion.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "scikit-learn>=1.2",
        "blosc2>=2.5",
        "connected-components-3d>=3.12",
        "tqdm>=4.60",
        "matplotlib>=3.6",
        "surface-distance>=0.1",  # DeepMind's surface elements: the convention of the official KiTS metrics
    ],
    extras_require={"test": ["pytest>=7", "onnx>=1.16", "onnxscript>=0.5", "onnxruntime>=1.18"],
                    "onnx": ["onnx>=1.16", "onnxscript>=0.5", "onnxruntime>=1.18"]},
    # boxunet's own trainers are listed in boxunet/trainers.py; other packages add theirs to the
    # "boxunet.trainers" entry-point group of their own setup.py (documentation/training.md)
    entry_points={"console_scripts": [f"{name}={target}" for name, target in CONSOLE_SCRIPTS.items()]},
)
