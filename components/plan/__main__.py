import sys


def main() -> int:
    from components.common.quiet import quiet_libraries

    quiet_libraries()  # before the step's modules load: some libraries warn as they are imported
    from components.common.cli import module_main
    from components.plan.cli import add_parser

    return module_main(add_parser, "plan")


sys.exit(main())
