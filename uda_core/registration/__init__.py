"""Image registration helpers (classical, SimpleITK): co-registering a subject's images."""

from uda_core.registration.sitk_align import align_affine, sitk_to_volume, volume_to_sitk

__all__ = ["align_affine", "sitk_to_volume", "volume_to_sitk"]
