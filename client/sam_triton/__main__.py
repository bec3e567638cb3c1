import sys

from sam_triton.cli import main

sys.exit(main())
