"""`python -m onnx_ecc VERB ...`"""

import sys

from onnx_ecc.cli import main

sys.exit(main())
