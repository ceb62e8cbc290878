"""`hyvl config list | show NAME [key=value ...] | keys`: the packaged recipes and every key."""

from __future__ import annotations

import argparse

from hyvl.cli.common import add_json_arg, print_table, write_json

EPILOG = """\
examples:
  hyvl config list
  hyvl config show hycoclip_tiny train.max_steps=100 data.train_shards=/data/grit/{0..9}.tar
  hyvl config show my_run.yaml > resolved.yaml
  hyvl config keys --json keys.json
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "config",
        help="list the packaged recipes, print a resolved config, list every config key",
        description="Training recipes are YAML files shipped in the package; `hyvl train --config` "
        "takes their name, NAME.yaml, or the path of your own file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the packaged recipes with a one-line description")
    add_json_arg(ls)
    ls.set_defaults(func=run_list)
    show = sub.add_parser(
        "show",
        help="the resolved config (recipe + overrides, every default filled in) as YAML",
        description="Print the config `hyvl train` would run with (the config.yaml it writes).",
    )
    show.add_argument("name", metavar="NAME|FILE", help="a recipe name, NAME.yaml or a YAML file")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    add_json_arg(show)
    show.set_defaults(func=run_show)
    keys = sub.add_parser("keys", help="every config key with its type, default and help")
    add_json_arg(keys)
    keys.set_defaults(func=run_keys)


def run_list(args: argparse.Namespace) -> int:
    from hyvl.recipes import list_recipes, recipe_description

    recipes = [{"name": n, "description": recipe_description(n)} for n in list_recipes()]
    print_table(recipes, align="left")
    print("\nhyvl train --config NAME --output-dir DIR [key=value ...]; hyvl config show NAME")
    write_json(args.json, {"recipes": recipes})
    return 0


def run_show(args: argparse.Namespace) -> int:
    import yaml

    from hyvl.config import load_run_config, to_dict
    from hyvl.models.registry import resolve_model_config

    cfg = load_run_config(args.name, args.overrides)
    resolve_model_config(cfg.model)  # a model name that does not exist fails here, not in train
    resolved = to_dict(cfg)
    print(yaml.safe_dump(resolved, sort_keys=False), end="")
    write_json(args.json, resolved)
    return 0


def run_keys(args: argparse.Namespace) -> int:
    import json

    from hyvl.config import fields_table

    rows = fields_table()
    table = [{**r, "default": json.dumps(r["default"])} for r in rows]
    print_table(table, align="left")
    print(
        "\nmodel.KEY=VALUE overrides that key of the named model (defaults above: a custom model)"
    )
    write_json(args.json, {"keys": rows})
    return 0
