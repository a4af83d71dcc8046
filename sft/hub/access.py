"""The one answer to "can the Hugging Face Hub be reached?", so that offline runs fail in seconds
instead of after minutes of the client's retries."""

import os

TRUE_VALUES = {"1", "true", "yes", "on"}


def offline_setting(datasets: bool = False) -> str | None:
    """The environment variable that puts the Hub client offline (for data sets, `datasets`' own one
    counts too), or None."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    return next((name for name in names if os.environ.get(name, "").lower() in TRUE_VALUES), None)


def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (offline mode, no connection), or None when it answers."""
    from huggingface_hub import constants, get_session

    if offline_setting() or constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        # One request with a short timeout, through the same client (and proxies) as real downloads.
        get_session().head(constants.ENDPOINT, timeout=5.0)
    except Exception as error:  # the HTTP client's own exception types vary across versions
        return f"the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached ({type(error).__name__})"
    return None
