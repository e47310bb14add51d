"""UDA Studio's shipped data (demo models, demo data, the MNI152 template), installed as the
package ``uda_core._resources``; read through :func:`uda_core.io.resources.resources_dir`."""
