from inferbench.cli import main

main()
