from neuronscope.cli import main

main()
