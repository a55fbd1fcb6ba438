import sys

from critic.weights import main

sys.exit(main(sys.argv[1:]))
