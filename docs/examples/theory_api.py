"""The theory engine from Python: exact population losses, the optimal geometry, the bounds.

Run it: ``python docs/examples/theory_api.py`` (CPU, a few seconds).
"""

import contrastlab.theory as T


def main() -> None:
    # --8<-- [start:population]
    # the exact population InfoNCE loss of the simplex ETF (C = 10 class vectors), k = 4096
    # negatives drawn from the marginal (collisions with the anchor's class included)
    V = T.simplex_etf(10)
    exact = T.population_loss(V, None, k=4096, loss="infonce", negatives="marginal")
    closed = T.etf_loss(10, 4096)  # the closed form for the ETF under a balanced prior
    print(f"population loss {float(exact):.6f}  closed form {closed:.6f}")
    # hard negatives: the same law tilted by exp(beta v_i^T v_j) (HUCL, beta = 2)
    hard = T.population_loss(V, None, k=4096, negatives="marginal", beta=2.0)
    print(f"HUCL(beta=2) at the ETF {float(hard):.6f}")
    # --8<-- [end:population]

    # --8<-- [start:optimum]
    # the optimal class vectors for a Zipf(1) prior over 5 classes, k = 64, on the sphere
    prior = T.parse_prior("zipf:1", 5)
    opt = T.optimize_population(prior=prior, k=64, restarts=2)
    print(f"loss {opt.loss:.6f}  converged {opt.converged}  "
          f"distance to the ETF's cosines {opt.etf_cosine_error:.4f}")
    print("cosines between the optimal class vectors:")
    print(opt.cosines.numpy().round(3))
    print("downstream: mean-classifier loss "
          f"{opt.downstream['mean_classifier_loss']:.6f}, "
          f"accuracy {opt.downstream['mean_classifier_accuracy']:.3f}")
    # --8<-- [end:optimum]

    # --8<-- [start:bounds]
    # every bound on the mean-classifier loss at the idealized contrastive minimum (C = 10)
    table = T.idealized_bounds(10, [16, 64, 512])
    for row in table.rows:
        print(f"K={row['K']:4d}  R_cont {row['R_cont']:.4f}  Bao upper {row['bao_upper']:.4f}  "
              f"Arora {row['arora']:.4g}  R*_mu-supv {row['R_mu_supv_star']:.4f}")
    # --8<-- [end:bounds]


if __name__ == "__main__":
    main()
