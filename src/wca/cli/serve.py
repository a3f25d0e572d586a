"""`wca serve`: the web page (Gradio) on the shipped demo model or any model spec."""

from __future__ import annotations

import argparse
import os
import tempfile

from wca.cli import UsageError
from wca.cli.classifier_options import budget_settings, classifier_budget
from wca.cli.options import (
    SPEED,
    describe,
    load_encoder,
    model_help,
    model_option,
    model_spec,
    run_options,
    speed_settings,
)
from wca.extras import require


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="a web page: drop an image, name classes, see WCA beside CLIP and CLIP-D",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=describe(
            "Start a Gradio page (needs `pip install 'wca[web]'`) that classifies an uploaded "
            "image among the classes typed in, by WCA, CLIP and CLIP-D, with the explanation "
            "figures and JSON; its API endpoint /classify serves gradio_client. Without "
            "--model it loads the shipped demo model with the demo world's classes, "
            "descriptions and example images.",
            "wca serve                                   # demo model, http://127.0.0.1:7860\n"
            "  wca serve --model open_clip:ViT-B-32/openai --host 0.0.0.0 --port 8080",
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (7860)")
    parser.add_argument(
        "--share",
        action="store_true",
        help="also open a temporary public link through Gradio's share servers (needs internet)",
    )
    model_option(
        parser, model_help("demo, with the demo world's classes, texts and example images")
    )
    speed_settings(parser)
    budget_settings(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:  # the arguments first: Gradio's import takes seconds
        raise UsageError(f"--port must be 1..65535, got {args.port}")
    options = run_options(args, names=SPEED)
    budget = classifier_budget(args)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    require("gradio", "the web page")
    require("matplotlib", "the web page")
    from wca.web.app import build_app, launch
    from wca.web.service import Service, demo_service

    if args.model:
        spec = model_spec(args)
        encoder = load_encoder(args, spec)
        service = Service(encoder, spec, budget=budget)
    else:
        examples = tempfile.mkdtemp(prefix="wca-serve-examples-")
        service = demo_service(examples, device=options.device, budget=budget)
    print(f"wca serve: {service.name}, http://{args.host}:{args.port}", flush=True)
    launch(build_app(service), args.host, args.port, share=args.share)
    return 0
