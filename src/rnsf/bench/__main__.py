from rnsf.bench.cli import main

main()
