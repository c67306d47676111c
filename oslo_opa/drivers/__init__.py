"""Decision drivers, loaded by stevedore from ``oslo_opa.drivers``."""

from __future__ import annotations

import stevedore

from oslo_opa.drivers.base import DecisionError, Driver, Settings
from oslo_opa.errors import PolicyLoadError

NAMESPACE = 'oslo_opa.drivers'

__all__ = ['DecisionError', 'Driver', 'Settings', 'load_driver']


def load_driver(name: str, settings: Settings) -> Driver:
    """Instantiate the driver registered under name.

    :raises PolicyLoadError: no such driver, or it failed to start.
    """
    try:
        mgr = stevedore.driver.DriverManager(
            NAMESPACE,
            name,
            invoke_on_load=True,
            invoke_args=(settings,),
        )
    except stevedore.exception.NoMatches as e:
        raise PolicyLoadError(
            f'[oslo_opa] driver = {name!r}: no such driver in the '
            f'{NAMESPACE} entry point namespace'
        ) from e
    except Exception as e:  # noqa: BLE001 - a driver's own failure
        raise PolicyLoadError(
            f'[oslo_opa] driver = {name!r} failed to start: {e}'
        ) from e
    return mgr.driver
