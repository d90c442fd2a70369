"""Downstream evaluation: benchmark tasks scored on a checkpoint (docs/DESIGN.md, "Downstream evaluation")."""
