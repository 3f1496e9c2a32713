from crisisbot.cli import run_to_exit

run_to_exit()
