"""Export to other toolchains: NIR (``nir_io``)."""

from asa_deploy.export.nir_io import (
    chip_config_to_nir,
    lowered_to_nir,
    nir_to_sinabs,
    read_nir,
    write_nir,
)

__all__ = ["chip_config_to_nir", "lowered_to_nir", "nir_to_sinabs", "read_nir", "write_nir"]
