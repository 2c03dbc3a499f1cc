from byokctl.cli import main

main()
