"""Test handlers for the awslambdaric runtime; `_HANDLER` is `app.<name>`."""

import os
import sys


def echo(event, context):
    return event


def raises(event, context):
    raise ValueError("deliberate failure")


def logs(event, context):
    print(f"python stdout line for {context.aws_request_id}")
    print(f"python stderr line for {context.aws_request_id}", file=sys.stderr)
    return "logged"


def exit_now(event, context):
    print("python: exiting mid-invoke", flush=True)
    os._exit(7)


def context(event, context):
    return {
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "remaining_ms_positive": context.get_remaining_time_in_millis() > 0,
        "uid": os.getuid(),
    }
