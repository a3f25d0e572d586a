"""COSMIC's graphs and hyper-classes (Huang et al., CVPR 2025; hf618/COSMIC
``utils/utils_cosmic.py``): class vectors joined above a similarity threshold found by
bisection for a target average degree (``build_graph_by_degree``), kept to the edges whose ends
share two neighbours (``is_SOG``), their maximal cliques (networkx, as theirs) as hyper-classes
(``make_max_cliques``), and a query's scores on the classes of its nearest hyper-classes
(``compute_clique_logits``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from wca.deferred import nx, torch

if TYPE_CHECKING:
    from torch import Tensor


DEGREE_TOLERANCE = 1e-2
BISECTIONS = 500  # make_max_cliques' max_iter for the degree control


def degree_graph(similarity: Tensor, degree: float) -> Tensor:
    """The adjacency ``bool [n, n]`` (no self-loops) of ``similarity > t``, t bisected between
    the matrix's minimum and maximum until the average degree is within 0.01 of ``degree``
    (at most 500 rounds; the last threshold tried where none is).

    Counted as theirs, faster: a round above more than (degree + 0.01) n entries only needs to
    know that, so the counts come from the largest entries (that many, and their ties), sorted
    once; a round whose threshold equals the last one's repeats it forever, so the bisection
    stops there.
    """
    n = len(similarity)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=similarity.device)
    low, high = similarity.min().item(), similarity.max().item()
    values = similarity[off_diagonal]
    enough = math.floor((degree + DEGREE_TOLERANCE) * n) + 1
    if enough < len(values):
        values = values[values >= values.kthvalue(len(values) - enough + 1).values]
    largest = values.sort().values
    threshold = None
    for _ in range(BISECTIONS):
        middle = (low + high) / 2
        if middle == threshold:
            break
        threshold = middle
        at = torch.tensor([threshold], dtype=largest.dtype, device=largest.device)
        count = len(largest) - int(torch.searchsorted(largest, at, right=True))
        if count == len(largest) < n * (n - 1):  # at least this many: too many edges
            low = threshold
            continue
        average = count / n
        if abs(average - degree) < DEGREE_TOLERANCE:
            break
        if average < degree:
            high = threshold
        else:
            low = threshold
    return (similarity > threshold) & off_diagonal


def second_order(adjacency: Tensor) -> list[tuple[int, int]]:
    """The edges ``(u, v)`` of ``adjacency``, row by row, whose two ends have at least two
    common neighbours (their ``(A * (A @ A)) > 1``), counted edge by edge."""
    edges = adjacency.nonzero().tolist()
    neighbours: list[set[int]] = [set() for _ in range(len(adjacency))]
    for u, v in edges:
        neighbours[u].add(v)
    return [(u, v) for u, v in edges if len(neighbours[u] & neighbours[v]) >= 2]


def hyper_classes(space: Tensor, degree: float) -> tuple[list[list[int]], Tensor]:
    """The maximal cliques of the second-order graph of ``space [n, D]`` (cosines, as their
    plain dot products) at average degree ``degree``, in networkx's order, and each clique's
    anchor: the mean of its members' vectors ``[K, D]``. networkx yields an isolated node as
    a clique of its own, so every node is in one (their patch for nodes in none never runs).
    """
    graph = nx.empty_graph(len(space))  # as from_numpy_array builds it: nodes, then edges
    graph.add_edges_from(second_order(degree_graph(space @ space.T, degree)))
    cliques = [list(map(int, clique)) for clique in nx.find_cliques(graph)]
    return cliques, torch.stack([space[clique].mean(0) for clique in cliques])


def clique_scores(
    query: Tensor,
    cliques: list[list[int]],
    anchors: Tensor,
    space: Tensor,
    ratio: float,
    alpha: float,
    beta: float,
) -> Tensor:
    """Scores ``[n]`` of ``query [D]`` on the nodes of its int(ratio K) (at least 1) nearest
    cliques by anchor: alpha exp(-(beta - beta query . node)) on those nodes, 0 elsewhere."""
    count = max(1, int(len(cliques) * ratio))
    nearest = torch.topk(query[None] @ anchors.T, k=count, dim=-1).indices[0]
    nodes = sorted({node for index in nearest.tolist() for node in cliques[index]})
    chosen = torch.tensor(nodes, device=space.device)
    scores = query.new_zeros(len(space))
    scores[chosen] = alpha * torch.exp(-(beta - beta * (space[chosen] @ query)))
    return scores
