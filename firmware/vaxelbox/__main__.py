from vaxelbox.cli import main

main()
