"""Flow-matching ODE sampling with torchdiffeq (adaptive or fixed-step solvers)."""

from collections.abc import Callable

import torch
from torchdiffeq import odeint

VelocityField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def flow_ode_sample(
    velocity: VelocityField,
    x_init: torch.Tensor,
    time_grid: torch.Tensor | None = None,
    method: str = "dopri5",
    atol: float = 1e-5,
    rtol: float = 1e-5,
    step_size: float | None = None,
    return_intermediates: bool = False,
) -> torch.Tensor:
    r"""Integrate ``dx/dt = velocity(x, t)`` from ``time_grid[0]`` to ``time_grid[-1]``.

    ``velocity(x, t)`` gets the state and a 0-dim time. With an adaptive ``method`` (``"dopri5"``,
    ``"bosh3"``, ...) ``atol`` / ``rtol`` steer the step size and ``time_grid`` only sets where the
    solution is reported; fixed-step methods (``"euler"``, ``"midpoint"``, ``"rk4"``) take
    ``step_size`` (default: the grid spacing). This is what Meta's ``flow_matching`` ``ODESolver.sample``
    does. Returns the final state, or the states at every grid time with ``return_intermediates``.
    """
    if time_grid is None:
        time_grid = torch.tensor([0.0, 1.0])
    time_grid = time_grid.to(x_init.device)
    if time_grid.dim() != 1 or time_grid.numel() < 2:
        raise ValueError(f"time_grid must be a 1-D tensor of at least 2 times, got shape {tuple(time_grid.shape)}")
    options = {"step_size": step_size} if step_size is not None else {}
    try:
        trajectory = odeint(
            lambda t, x: velocity(x, t), x_init, time_grid, method=method, atol=atol, rtol=rtol, options=options
        )
    except AssertionError as error:  # torchdiffeq reports unknown methods / bad options by assert
        raise ValueError(f"torchdiffeq rejected method={method!r} with options {options}: {error}") from error
    return trajectory if return_intermediates else trajectory[-1]
