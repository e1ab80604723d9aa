"""The cost count of the TT-Lang kernel against ttnn's joint SDPA (`runtime/ttlang/cost.py`), on cases small enough to
count by hand, and its agreement with the plan the kernel runs."""

from jointattn.kernels.ttlang.schedule import plan_joint_attention
from jointattn.runtime.ttlang.cost import Cost, call_cost, kernel_cost, table, ttnn_joint_sdpa_cost


def test_kernel_cost_counted_by_hand():
    # b=1, nh=1, N=70 (3 tiles, 40 valid rows: 2 tiles, the second partly), L=19 (1 tile, 5 valid), dh=32 (1 tile);
    # q_chunk 2: items spatial [2, 1] tiles, joint [1], in two launches (a chunk of 2; the tails of 1 of both
    # sets); k_chunk 2: key pieces: spatial tile 0 (whole), tile 1 (boundary, masked), joint tile 0 (boundary,
    # masked) -> 3 key tiles, 2 mask tiles per item.
    plan = plan_joint_attention(1, 1, 70, 19, 32, valid_n=40, valid_l=5, q_chunk=2, k_chunk=2, grid=(1, 1))
    assert [(launch.q_tiles, launch.items) for launch in plan.launches] == [(2, 1), (1, 2)]
    for launch in plan.launches:
        assert [(p.start, p.count, p.valid_rows) for p in launch.pieces()] == [
            (0, 1, 32),
            (1, 1, 8),
            (0, 1, 5),
        ]
    query_tiles = 2 + 1 + 1
    reads = query_tiles + 3 * (2 * 3 + 2)  # q; per item K and V of 3 tiles and 2 mask tiles
    writes = query_tiles * 2  # out and lse
    assert kernel_cost(plan) == Cost(reads, writes, 2 * query_tiles * 3)


def test_ttnn_cost_counted_by_hand():
    # N=70 -> 3 tiles, L=19 -> 1 tile. Queries padded to q chunks of 2 tiles: 2 + 1 = 3 chunks. Keys padded to k
    # chunks of 3 tiles: 3 + 3 = 6 key tiles, read (K and V) by every query chunk.
    cost = ttnn_joint_sdpa_cost(1, 1, 70, 19, 32, q_chunk=2, k_chunk=3)
    assert cost == Cost(3 * (2 + 2 * 6), 3 * 2, 3 * 2 * 2 * 6)


def test_kernel_reads_no_more_than_ttnn_and_less_with_padding():
    full = call_cost(2, 2, 100, 19, 40, valid_n=(100, 100), valid_l=(19, 19), q_chunk=2, k_chunk=3)
    padded = call_cost(2, 2, 100, 19, 40, valid_n=(100, 37), valid_l=(19, 5), q_chunk=2, k_chunk=3)
    ttnn = ttnn_joint_sdpa_cost(2, 2, 100, 19, 40, 2, 3)
    assert padded.matmul_tiles < full.matmul_tiles <= ttnn.matmul_tiles
    assert padded.tiles_read < full.tiles_read <= ttnn.tiles_read


def test_a_call_costs_the_sum_of_its_groups():
    """Batches with different valid lengths run as separate groups; a batch with no valid key costs nothing."""
    kw = dict(q_chunk=2, k_chunk=3)
    both = call_cost(3, 2, 100, 19, 40, valid_n=(100, 37, 0), valid_l=(19, 5, 0), **kw)
    one = call_cost(1, 2, 100, 19, 40, valid_n=(100,), valid_l=(19,), **kw)
    other = call_cost(1, 2, 100, 19, 40, valid_n=(37,), valid_l=(5,), **kw)
    assert both == one + other


def test_readme_table_is_the_generated_one():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert table() in readme
