from clusterkit.cli.main import run

run()
