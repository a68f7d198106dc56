from inferbench.cli import main

main(exit_when_done=True)
