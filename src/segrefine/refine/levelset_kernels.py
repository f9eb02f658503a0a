"""The I-DRLSE evolution loop: the numba kernel the library runs, and the NumPy
version kept as the reference and speed baseline (``idrlse_numpy``, ``bench refine``).

The setup around them (likelihood, initial level set, checks, stopping) is in
:mod:`segrefine.refine.levelset`; see its docstring for the equations.
"""

from __future__ import annotations

import math

import numba
import numpy as np

NONE, FOREGROUND, BACKGROUND = 0, 1, 2
CONSTRAINT_LEVEL = 0.5  # |φ| forced on scribble pixels


# ---------------------------------------------------------------------------
# the evolution, numba
# ---------------------------------------------------------------------------


@numba.njit(cache=True)
def _grad_at(f, i, j, height, width, ihx, ihy, ihx2, ihy2):
    """``numpy.gradient`` of ``f`` at (i, j): central inside, one-sided on the border."""
    if j == 0:
        gx = (f[i, 1] - f[i, 0]) * ihx
    elif j == width - 1:
        gx = (f[i, j] - f[i, j - 1]) * ihx
    else:
        gx = (f[i, j + 1] - f[i, j - 1]) * ihx2
    if i == 0:
        gy = (f[1, j] - f[0, j]) * ihy
    elif i == height - 1:
        gy = (f[i, j] - f[i - 1, j]) * ihy
    else:
        gy = (f[i + 1, j] - f[i - 1, j]) * ihy2
    return gx, gy

@numba.njit(cache=True)
def _evolve_numba(phi, P, ell, cons, hy, hx, alpha, beta, length_weight, mu, dt, eps, n_iter, margin,
                  nx, ny, ux, uy, out, flag):
    """``n_iter`` iterations on the narrow band chosen from ``phi`` at the call.

    Interior band pixels use flat indices (neighbours at ±1 and ±width); the
    few on the slice border go through :func:`_grad_at`.
    """
    height, width = phi.shape
    n_pix = height * width
    two_pi = 2.0 * np.pi
    ihx2, ihy2 = 0.5 / hx, 0.5 / hy
    ihx, ihy = 1.0 / hx, 1.0 / hy
    lx, ly = 1.0 / (hx * hx), 1.0 / (hy * hy)
    inv2eps = 1.0 / (2.0 * eps)
    # the band: |φ| <= ε + margin, the scribbles' reach (ℓ != 0) and the scribbles;
    # the halo adds the 4-neighbours whose gradients the band's update reads.
    # H_ε is 0 or 1 off the band and those pixels do not move: their sums are fixed.
    limit = eps + margin
    n_band = 0
    out_h = 0.0
    out_ph = 0.0
    s_p = 0.0
    for i in range(height):
        for j in range(width):
            p = phi[i, j]
            s_p += P[i, j]
            if abs(p) <= limit or ell[i, j] != 0.0 or cons[i, j] != 0:
                flag[i, j] = 2
                n_band += 1
            else:
                flag[i, j] = 0
                if p > 0.0:
                    out_h += 1.0
                    out_ph += P[i, j]
    for i in range(height):
        for j in range(width):
            if flag[i, j] != 2 and (
                (i > 0 and flag[i - 1, j] == 2)
                or (i < height - 1 and flag[i + 1, j] == 2)
                or (j > 0 and flag[i, j - 1] == 2)
                or (j < width - 1 and flag[i, j + 1] == 2)
            ):
                flag[i, j] = 1
    n_halo = 0
    for i in range(height):
        for j in range(width):
            if flag[i, j] != 0:
                n_halo += 1
    band = np.empty(n_band, np.int64)
    halo = np.empty(n_halo, np.int64)
    band_edge = np.empty(n_band, np.bool_)
    halo_edge = np.empty(n_halo, np.bool_)
    band_cos = np.empty(n_band)
    kb = 0
    kh = 0
    for i in range(height):
        for j in range(width):
            edge = i == 0 or j == 0 or i == height - 1 or j == width - 1
            if flag[i, j] != 0:
                halo[kh] = i * width + j
                halo_edge[kh] = edge
                kh += 1
            if flag[i, j] == 2:
                band[kb] = i * width + j
                band_edge[kb] = edge
                kb += 1
    f = phi.ravel()
    Pf = P.ravel()
    ef = ell.ravel()
    cf = cons.ravel()
    nxf = nx.ravel()
    nyf = ny.ravel()
    uxf = ux.ravel()
    uyf = uy.ravel()
    of = out.ravel()
    w = width
    for _ in range(n_iter):
        # Li's Neumann border: copy the values two pixels inside
        for j in range(width):
            phi[0, j] = phi[2, j]
            phi[height - 1, j] = phi[height - 3, j]
        for i in range(height):
            phi[i, 0] = phi[i, 2]
            phi[i, width - 1] = phi[i, width - 3]
        # c1, c2 with the smoothed Heaviside; keep cos(πφ/ε) = ±sqrt(1 - sin²) for δ_ε
        s_h = out_h
        s_ph = out_ph
        for k in range(n_band):
            q = band[k]
            p = f[q]
            if p > eps:
                h = 1.0
            elif p < -eps:
                h = 0.0
            else:
                sn = math.sin(np.pi * p / eps)
                h = 0.5 * (1.0 + p / eps + sn / np.pi)
                cs = math.sqrt(max(0.0, 1.0 - sn * sn))
                band_cos[k] = cs if abs(p) <= 0.5 * eps else -cs
            s_h += h
            s_ph += Pf[q] * h
        c1 = s_ph / s_h if s_h > 0.0 else 1.0
        c2 = (s_p - s_ph) / (n_pix - s_h) if n_pix - s_h > 0.0 else 0.0
        # pass 1 (band and halo): ∇φ, ∇φ/|∇φ| and (d_p - 1)∇φ
        for k in range(n_halo):
            q = halo[k]
            if halo_edge[k]:
                i = q // w
                j = q - i * w
                gx, gy = _grad_at(phi, i, j, height, width, ihx, ihy, ihx2, ihy2)
            else:
                gx = (f[q + 1] - f[q - 1]) * ihx2
                gy = (f[q + w] - f[q - w]) * ihy2
            s = math.sqrt(gx * gx + gy * gy)
            inv = 1.0 / (s + 1e-10)
            nxf[q] = gx * inv
            nyf[q] = gy * inv
            if s == 0.0:
                dps = 1.0
            elif s <= 1.0:
                dps = math.sin(two_pi * s) / (two_pi * s)
            else:
                dps = (s - 1.0) / s
            uxf[q] = (dps - 1.0) * gx
            uyf[q] = (dps - 1.0) * gy
        # pass 2 (band): the update
        for k in range(n_band):
            q = band[k]
            p = f[q]
            if band_edge[k]:
                i = q // w
                j = q - i * w
                dnx, _ = _grad_at(nx, i, j, height, width, ihx, ihy, ihx2, ihy2)
                _, dny = _grad_at(ny, i, j, height, width, ihx, ihy, ihx2, ihy2)
                dux, _ = _grad_at(ux, i, j, height, width, ihx, ihy, ihx2, ihy2)
                _, duy = _grad_at(uy, i, j, height, width, ihx, ihy, ihx2, ihy2)
                im = i - 1 if i > 0 else 0
                ip = i + 1 if i < height - 1 else height - 1
                jm = j - 1 if j > 0 else 0
                jp = j + 1 if j < width - 1 else width - 1
                lap = (phi[i, jp] + phi[i, jm] - 2.0 * p) * lx + (phi[ip, j] + phi[im, j] - 2.0 * p) * ly
            else:
                dnx = (nxf[q + 1] - nxf[q - 1]) * ihx2
                dux = (uxf[q + 1] - uxf[q - 1]) * ihx2
                dny = (nyf[q + w] - nyf[q - w]) * ihy2
                duy = (uyf[q + w] - uyf[q - w]) * ihy2
                lap = (f[q + 1] + f[q - 1] - 2.0 * p) * lx + (f[q + w] + f[q - w] - 2.0 * p) * ly
            force = mu * (dux + duy + lap) + beta * ef[q]
            if -eps <= p <= eps:
                delta = (1.0 + band_cos[k]) * inv2eps
                pq = Pf[q]
                region = (pq - c1) * (pq - c1) - (pq - c2) * (pq - c2)
                force += delta * (length_weight * (dnx + dny) - alpha * region)
            v = p + dt * force
            c = cf[q]
            if c == 1 and v < 0.5:
                v = 0.5
            elif c == 2 and v > -0.5:
                v = -0.5
            of[q] = v
        for k in range(n_band):
            f[band[k]] = of[band[k]]


# ---------------------------------------------------------------------------
# the evolution, NumPy (reference and speed baseline)
# ---------------------------------------------------------------------------


def _evolve_numpy(phi, P, ell, cons, hy, hx, alpha, beta, length_weight, mu, dt, eps, n_iter):
    fg, bg = cons == FOREGROUND, cons == BACKGROUND
    for _ in range(n_iter):
        phi[0, :], phi[-1, :] = phi[2, :], phi[-3, :]
        phi[:, 0], phi[:, -1] = phi[:, 2], phi[:, -3]
        band = np.abs(phi) <= eps
        heav = np.where(phi > eps, 1.0, 0.0)
        heav[band] = 0.5 * (1.0 + phi[band] / eps + np.sin(np.pi * phi[band] / eps) / np.pi)
        s_h = heav.sum()
        c1 = (P * heav).sum() / s_h if s_h > 0 else 1.0
        c2 = (P * (1.0 - heav)).sum() / (phi.size - s_h) if phi.size - s_h > 0 else 0.0

        gy, gx = np.gradient(phi, hy, hx)
        s = np.sqrt(gx**2 + gy**2)
        nx, ny = gx / (s + 1e-10), gy / (s + 1e-10)
        with np.errstate(invalid="ignore", divide="ignore"):
            dps = np.where(s <= 1.0, np.sin(2 * np.pi * s) / (2 * np.pi * s), (s - 1.0) / s)
        dps[s == 0] = 1.0
        curvature = np.gradient(nx, hx, axis=1) + np.gradient(ny, hy, axis=0)
        padded = np.pad(phi, 1, mode="edge")
        lap = (padded[1:-1, 2:] + padded[1:-1, :-2] - 2 * phi) / hx**2 + (
            padded[2:, 1:-1] + padded[:-2, 1:-1] - 2 * phi
        ) / hy**2
        dist_reg = np.gradient((dps - 1) * gx, hx, axis=1) + np.gradient((dps - 1) * gy, hy, axis=0)
        dist_reg += lap
        delta = np.where(band, (1.0 + np.cos(np.pi * phi / eps)) / (2 * eps), 0.0)
        region = (P - c1) ** 2 - (P - c2) ** 2
        phi += dt * (mu * dist_reg + delta * (length_weight * curvature - alpha * region) + beta * ell)
        phi[fg] = np.maximum(phi[fg], CONSTRAINT_LEVEL)
        phi[bg] = np.minimum(phi[bg], -CONSTRAINT_LEVEL)
