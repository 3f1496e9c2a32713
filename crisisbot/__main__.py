import sys

from crisisbot.cli import main

sys.exit(main())
