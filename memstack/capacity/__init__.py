"""Capacity planning: stepped load to the knee of one service process, the USL fit, measured
bytes per stored item, the plan for a Pulumi stack, and the report."""
