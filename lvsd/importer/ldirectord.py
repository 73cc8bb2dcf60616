"""placeholder"""

from lvsd.importer.common import Conversion


def convert(path: str) -> Conversion:
    raise NotImplementedError
