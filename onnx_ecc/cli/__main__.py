"""`python -m onnx_ecc.cli VERB ...`"""

import sys

from onnx_ecc.cli import main

sys.exit(main())
