"""Expansion-aware pruning during `model.fit`, for tf_keras and Keras 3.

`prune` dispatches on the model's Keras to `tf_keras_wrapper` (tfmot's `PruneLowMagnitude` underneath) or
`keras3_wrapper` (masks applied as the layer reads its matrices, any Keras 3 backend); both follow the contract in
`wrapper`. `schedule` is the tfmot `PruningSchedule` with the stop rules, `callback` the Keras callback that drives
every wrapper at each pruning step, `decision` what a step commits, corrects, pauses or holds, and `masks` the mask
policies (`masks` and `decision` are numpy only).
"""
