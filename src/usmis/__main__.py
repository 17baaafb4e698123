from usmis.cli import main

main()
