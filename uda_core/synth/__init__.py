"""The demo/benchmark data generator: real anatomy (MNI ICBM152 2009a), simulated scanners.

    from uda_core.synth import make_subject, write_demo_data
    volumes = make_subject(100)                # {"t1": (image, labels), "protocol": ..., ...}
    write_demo_data("demo")                    # 3 subjects x 4 domains + manifest.json

Modules: template (the maps and the label rule), deform (random smooth deformations),
contrast (MR signal simulation), domains (the simulated scanners, make_subject),
demo_data (writing a data set to disk).
"""

from uda_core.synth.deform import Deformation, random_deformation
from uda_core.synth.demo_data import write_demo_data
from uda_core.synth.domains import DOMAINS, Domain, make_subject, subject_deformation
from uda_core.synth.template import CLASS_NAMES, extract_template, load_template, tissue_labels

__all__ = [
    "CLASS_NAMES",
    "DOMAINS",
    "Deformation",
    "Domain",
    "extract_template",
    "load_template",
    "make_subject",
    "random_deformation",
    "subject_deformation",
    "tissue_labels",
    "write_demo_data",
]
